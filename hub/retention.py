"""Retention: how long the hub keeps telemetry, and the periodic task that prunes the rest.

``RetentionPolicy`` (from ``hub.toml``) and ``cutoffs`` are pure; ``RetentionTask`` is a hub
component that runs one pass shortly after start and then every ``retention_interval``. A pass
deletes in chunks, each one short transaction on the store's writer thread, so ingest (which
queues its transactions on the same thread) gets in between chunks. docs/hub.md "Retention".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hub.config import HubConfig, parse_duration, parse_retention
from hub.context import HubContext
from hub.store.telemetry import EventKey, SeriesKey
from hub.timeutil import now_iso
from sbutil.tasks import cancel_and_wait

log = logging.getLogger(__name__)
T = TypeVar("T")

HOUR = 3600
CHUNK_ROWS = 5000
# A chunk that finds little to delete still ends after this many series (each one a seek).
CHUNK_SERIES = 2000
FIRST_PASS_DELAY = 30.0
TABLES = ("metrics_1m", "metrics_1h", "events")


@dataclass(frozen=True)
class RetentionPolicy:
    """Windows in seconds; None keeps that table for ever."""

    metrics_1m: int | None = 48 * HOUR
    metrics_1h: int | None = 90 * 24 * HOUR
    events: int | None = 30 * 24 * HOUR
    events_keep: int = 100
    interval: int = 600

    @classmethod
    def from_config(cls, cfg: HubConfig) -> RetentionPolicy:
        return cls(
            metrics_1m=parse_retention(cfg.retention_metrics_1m, "retention_metrics_1m"),
            metrics_1h=parse_retention(cfg.retention_metrics_1h, "retention_metrics_1h"),
            events=parse_retention(cfg.retention_events, "retention_events"),
            events_keep=cfg.retention_events_keep,
            interval=parse_duration(cfg.retention_interval, "retention_interval"),
        )

    @property
    def enabled(self) -> bool:
        return any(w is not None for w in (self.metrics_1m, self.metrics_1h, self.events))


@dataclass(frozen=True)
class Cutoffs:
    """Rows older than these go: metric ``ts`` (epoch seconds) and event ``ts`` (ISO text)
    strictly below. None: keep everything."""

    metrics_1m: int | None
    metrics_1h: int | None
    events: str | None


def hour_floor(ts: float) -> int:
    return int(ts // HOUR * HOUR)


def cutoffs(policy: RetentionPolicy, now: float) -> Cutoffs:
    """Metric cut-offs are rounded down to the hour: an hour's minute rows go together, so
    the hourly rollup (folded from each new minute, recomputed from its minute rows when one
    of them is rewritten) never sees part of an hour, and nothing younger than the window is
    ever cut."""
    m1 = None if policy.metrics_1m is None else hour_floor(now - policy.metrics_1m)
    h1 = None if policy.metrics_1h is None else hour_floor(now - policy.metrics_1h)
    ev = None if policy.events is None else now_iso(now - policy.events)
    return Cutoffs(m1, h1, ev)


@dataclass
class PassResult:
    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    chunks: int = 0
    longest_chunk: float = 0.0
    seconds: float = 0.0


class RetentionTask:
    """The hub component (``Hub.components``) that prunes on a timer."""

    def __init__(
        self,
        policy: RetentionPolicy,
        *,
        first_delay: float = FIRST_PASS_DELAY,
        chunk_rows: int = CHUNK_ROWS,
        chunk_series: int = CHUNK_SERIES,
    ) -> None:
        self.policy = policy
        self.first_delay = min(first_delay, float(policy.interval))
        self.chunk_rows = chunk_rows
        self.chunk_series = chunk_series
        self._hub: HubContext | None = None
        self._task: asyncio.Task[None] | None = None
        self.passes = 0

    async def start(self, hub: HubContext) -> None:
        self._hub = hub
        if not self.policy.enabled:
            log.info("retention: every category kept for ever; no pruning")
            return
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        self._task = None

    async def _loop(self) -> None:
        await asyncio.sleep(self.first_delay)
        while True:
            try:
                await self.run_pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A failed pass (e.g. the disk full) must not end retention for good.
                log.exception("retention pass failed; retrying in %ss", self.policy.interval)
                if self._hub is not None:
                    self._hub.metrics.retention_passes.labels("error").inc()
            await asyncio.sleep(self.policy.interval)

    async def _chunk(self, result: PassResult, fn: Callable[..., T], *args: Any) -> T:
        """One chunk on the writer thread, timed: how long it held the writer."""
        assert self._hub is not None
        t0 = time.monotonic()
        out = await self._hub.call(fn, *args)
        took = time.monotonic() - t0
        result.chunks += 1
        result.longest_chunk = max(result.longest_chunk, took)
        self._hub.metrics.retention_chunk_seconds.observe(took)
        return out

    async def run_pass(self, now: float | None = None) -> PassResult:
        hub = self._hub
        assert hub is not None and hub.store is not None
        store = hub.store
        cut = cutoffs(self.policy, time.time() if now is None else now)
        result = PassResult()
        started = time.monotonic()

        for resolution, cutoff in (("1m", cut.metrics_1m), ("1h", cut.metrics_1h)):
            if cutoff is None:
                continue
            table = f"metrics_{resolution}"
            series: SeriesKey | None = None
            done = False
            while not done:
                n, series, done = await self._chunk(
                    result,
                    store.prune_metrics_chunk,
                    resolution,
                    cutoff,
                    series,
                    self.chunk_rows,
                    self.chunk_series,
                )
                result.deleted[table] += n
                hub.metrics.retention_deleted.labels(table).inc(n)
                # Between chunks the writer thread runs whatever ingest queued meanwhile.
                await asyncio.sleep(0)

        if cut.events is not None:
            floors: dict[str | None, int] = {}
            event_pos: EventKey | None = None
            done = False
            while not done:
                n, event_pos, done = await self._chunk(
                    result,
                    store.prune_events_chunk,
                    cut.events,
                    self.policy.events_keep,
                    event_pos,
                    self.chunk_rows,
                    floors,
                )
                result.deleted["events"] += n
                hub.metrics.retention_deleted.labels("events").inc(n)
                await asyncio.sleep(0)

        result.seconds = time.monotonic() - started
        self.passes += 1
        hub.metrics.retention_passes.labels("ok").inc()
        log.info(
            "retention pass: deleted %d metrics_1m, %d metrics_1h, %d events rows in %.2fs"
            " (%d chunks, longest %.0f ms)",
            result.deleted["metrics_1m"],
            result.deleted["metrics_1h"],
            result.deleted["events"],
            result.seconds,
            result.chunks,
            result.longest_chunk * 1000,
        )
        return result
