"""Host (and optionally per-container) metric sampling with psutil, plus the metrics loop.

``sample_host`` is one synchronous round of cheap psutil reads; ``MetricsLoop`` runs it on a
timer, stores the raw samples, folds finished minutes into rollups (each rollup with its
outbox row, inside the store) and applies retention on a slower timer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import psutil

from agent.config import MetricsConfig, OutboxConfig
from agent.errors import StoreFull
from agent.metrics import folding
from agent.store import Store
from sbutil.tasks import wait_for

log = logging.getLogger(__name__)

# container name -> {"cpu_percent": ..., "memory_bytes": ...}
ContainerStatsFn = Callable[[], Awaitable[Mapping[str, Mapping[str, float]]]]

CONTAINER_STATS_TIMEOUT = 5.0


# Every name ``sample_host`` may report, in its order (what a device's metrics look like to
# the benches and the wire tests that stand in for one).
HOST_METRICS = (
    "cpu.percent",
    "mem.percent",
    "mem.used_bytes",
    "mem.available_bytes",
    "disk.percent",
    "disk.free_bytes",
    "disk.used_bytes",
    "load.1",
    "load.5",
    "load.15",
    "uptime.seconds",
    "temp.celsius",
)


def sample_host(disk_path: str | Path) -> dict[str, float]:
    """One round of host metrics. Anything the platform lacks is simply left out."""
    out: dict[str, float] = {}
    # interval=None compares with the previous call: non-blocking, and the first call's 0.0
    # is dropped by the caller priming it once at start.
    out["cpu.percent"] = float(psutil.cpu_percent(interval=None))
    vm = psutil.virtual_memory()
    out["mem.percent"] = float(vm.percent)
    out["mem.used_bytes"] = float(vm.total - vm.available)
    out["mem.available_bytes"] = float(vm.available)
    try:
        du = psutil.disk_usage(str(disk_path))
        out["disk.percent"] = float(du.percent)
        out["disk.free_bytes"] = float(du.free)
        out["disk.used_bytes"] = float(du.used)
    except OSError as exc:
        log.debug("disk usage of %s unavailable: %s", disk_path, exc)
    try:
        l1, l5, l15 = psutil.getloadavg()
        out["load.1"], out["load.5"], out["load.15"] = float(l1), float(l5), float(l15)
    except (OSError, AttributeError):
        pass
    out["uptime.seconds"] = max(0.0, time.time() - psutil.boot_time())
    temp = _max_temperature()
    if temp is not None:
        out["temp.celsius"] = temp
    return out


def _max_temperature() -> float | None:
    read = getattr(psutil, "sensors_temperatures", None)
    if read is None:
        return None
    try:
        sensors = read()
    except (OSError, RuntimeError):
        return None
    temps = [
        float(t.current)
        for entries in sensors.values()
        for t in entries
        if t.current is not None and math.isfinite(t.current)
    ]
    return max(temps) if temps else None


def container_metrics(stats: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Flatten per-container stats into metric names ``container.<name>.<what>``."""
    out: dict[str, float] = {}
    for name, values in stats.items():
        for what, value in values.items():
            if isinstance(value, int | float) and math.isfinite(value):
                out[f"container.{name}.{what}"] = float(value)
    return out


class MetricsLoop:
    """Samples every ``config.interval`` and prunes every ``config.prune_interval``."""

    def __init__(
        self,
        store: Store,
        config: MetricsConfig,
        outbox: OutboxConfig,
        *,
        disk_path: str | Path,
        container_stats: ContainerStatsFn | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.outbox = outbox
        self.disk_path = disk_path
        self.container_stats = container_stats
        self.clock = clock
        self.samples_taken = 0
        self._last_prune = 0.0

    async def sample_once(self) -> dict[str, float]:
        values = sample_host(self.disk_path)
        if self.container_stats is not None:
            try:
                stats = await wait_for(self.container_stats(), CONTAINER_STATS_TIMEOUT)
                values.update(container_metrics(stats))
            except Exception as exc:  # engine hiccups must not stop host metrics
                log.warning(
                    "container stats unavailable: %s",
                    exc,
                    extra={"device": self.store.device_id},
                )
        now = self.clock()
        await self.store.write(Store.record_samples, now, values)
        await self.store.write(folding.roll_up, now)
        self.samples_taken += 1
        if now - self._last_prune >= self.config.prune_interval:
            await self.prune(now)
        return values

    async def prune(self, now: float | None = None) -> dict[str, int]:
        now = self.clock() if now is None else now
        r = self.config.retention
        out = await self.store.write(
            Store.prune,
            raw=r.raw,
            minute=r.minute,
            hour=r.hour,
            outbox_max_bytes=self.outbox.max_bytes,
            outbox_max_age=self.outbox.max_age,
            now=now,
        )
        self._last_prune = now
        log.debug("retention applied", extra={"device": self.store.device_id, **out})
        return out

    async def run(self, stop: asyncio.Event) -> None:
        psutil.cpu_percent(interval=None)  # prime: the first reading is meaningless
        full = False
        while not stop.is_set():
            try:
                await wait_for(stop.wait(), self.config.interval)
                return
            except TimeoutError:
                pass
            try:
                await self.sample_once()
                full = False
            except StoreFull as exc:
                # Expected while the disk is full (readiness says so): one line when it
                # starts, not a traceback every interval into logs that may share the disk.
                if not full:
                    log.warning(
                        "metrics not recorded until space is freed: %s",
                        exc,
                        extra={"device": self.store.device_id},
                    )
                full = True
            except Exception:
                log.exception("metrics sample failed", extra={"device": self.store.device_id})
