"""``SimWorkers``: simulated devices in separate worker processes (``bench.sim.worker``).

workers = SimWorkers(hub_url, "hub", password, log_dir=work, prefix="fl")
await workers.add(first_index=0, count=50_000, ramp_s=30)   # 3 processes of ≤ 20 000
ok, why, took = await workers.settle(expected_online=50_000, timeout=120)
workers.totals(); workers.processes()                       # summed stats, for CPU/RSS
await workers.stop()                                        # SIGTERM by pid, then SIGKILL

The measuring process keeps its event loop (and most of a core) to itself: devices' timers,
publishes and acks run in the workers. Each worker also ends on its own (``lifetime``, or its
stdin closing when this process goes away).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO

import psutil

from bench.sim.options import SimError
from bench.sim.worker import PASSWORD_ENV
from sbutil.tasks import wait_for

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
COUNTERS = ("online", "backlog_rows", "heartbeats", "batches", "rows", "duplicates",
            "publish_failures", "probes", "probe_failures", "revisions", "applies")  # fmt: skip


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process, first: int, count: int, log: BinaryIO):
        self.proc = proc
        self.first = first
        self.count = count
        self.log = log
        self.latest: dict[str, Any] = {}
        self.ready = asyncio.Event()
        self.error: str | None = None
        self.reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("event") == "ready":
                self.ready.set()
            elif doc.get("event") == "stats":
                self.latest = doc
            elif doc.get("event") == "error":
                self.error = str(doc.get("error"))
        self.ready.set()  # ended: whoever waits must not wait forever


class SimWorkers:
    def __init__(
        self,
        hub_url: str,
        user: str,
        password: str,
        *,
        log_dir: Path,
        prefix: str = "fl",
        id_digits: int = 6,
        heartbeat_s: float = 30.0,
        rollup_s: float = 60.0,
        flush_s: float = 0.0,
        apply_s: float = 0.2,
        connections: int = 2,
        per_worker: int = 20_000,
        lifetime_s: float = 3600.0,
    ) -> None:
        self.hub_url = hub_url
        self.user = user
        self.password = password
        self.log_dir = log_dir
        self.prefix = prefix
        self.id_digits = id_digits
        self.heartbeat_s = heartbeat_s
        self.rollup_s = rollup_s
        self.flush_s = flush_s
        self.apply_s = apply_s
        self.connections = connections
        self.per_worker = per_worker
        self.lifetime_s = lifetime_s
        self.workers: list[_Worker] = []

    async def add(self, first_index: int, count: int, ramp_s: float = 0.0) -> None:
        """Start workers for devices ``first_index`` … ``+count-1`` (at most ``per_worker``
        each, all ramping over the same ``ramp_s``); returns once every one is connected."""
        new: list[_Worker] = []
        for first in range(first_index, first_index + count, self.per_worker):
            n = min(self.per_worker, first_index + count - first)
            log = (self.log_dir / f"sim-worker-{first}.log").open("ab")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.sim.worker", "--hub-url", self.hub_url,
                "--user", self.user, "--prefix", self.prefix, "--first-index", str(first),
                "--count", str(n), "--id-digits", str(self.id_digits),
                "--heartbeat", str(self.heartbeat_s), "--rollup", str(self.rollup_s),
                "--flush", str(self.flush_s),
                "--apply", str(self.apply_s), "--connections", str(self.connections),
                "--ramp", str(ramp_s), "--lifetime", str(self.lifetime_s),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                env={**os.environ, PASSWORD_ENV: self.password},
            )  # fmt: skip
            w = _Worker(proc, first, n, log)
            w.reader = asyncio.get_running_loop().create_task(w.read())
            self.workers.append(w)
            new.append(w)
        for w in new:
            try:
                await wait_for(w.ready.wait(), READY_TIMEOUT)
            except TimeoutError:
                raise SimError(f"worker for {w.first}+{w.count} not ready") from None
            if w.proc.returncode is not None or w.error:
                raise SimError(
                    f"worker for {w.first}+{w.count} ended: {w.error or w.proc.returncode}"
                    f" (log {w.log.name})"
                )

    def totals(self) -> dict[str, Any]:
        """The workers' newest stats, summed (``ramped``: all of them)."""
        out: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
        out["ramped"] = bool(self.workers)
        out["alive"] = 0
        for w in self.workers:
            for k in COUNTERS:
                out[k] += int(w.latest.get(k, 0))
            out["ramped"] = out["ramped"] and bool(w.latest.get("ramped"))
            out["alive"] += w.proc.returncode is None
        return out

    def processes(self) -> list[psutil.Process]:
        out = []
        for w in self.workers:
            with contextlib.suppress(psutil.Error):
                out.append(psutil.Process(w.proc.pid))
        return out

    async def settle(
        self,
        expected_online: int,
        timeout: float,
        *,
        quiet_s: float = 5.0,
        backlog_max: int = 100,
        hub_check: Callable[[], Awaitable[bool]] | None = None,
    ) -> tuple[bool, str, float]:
        """Wait (at most ``timeout`` s) until the burst of the last ``add`` has drained:
        every worker ramped and ``expected_online`` devices online, the summed outbox at most
        ``backlog_max`` rows, no new publish or desired-read failure for ``quiet_s`` s, and
        ``hub_check()`` true. Returns (settled, what was still unmet, seconds waited)."""
        t0 = time.monotonic()
        marks: tuple[int, int] | None = None
        quiet_since = t0
        why = "no stats yet"
        while True:
            now = time.monotonic()
            s = self.totals()
            fails = (s["publish_failures"], s["probe_failures"])
            if fails != marks:
                marks, quiet_since = fails, now
            unmet = []
            if s["alive"] < len(self.workers):
                raise SimError(f"{len(self.workers) - s['alive']} simulator worker(s) died")
            if not s["ramped"] or s["online"] < expected_online:
                unmet.append(f"online {s['online']}/{expected_online}")
            if s["backlog_rows"] > backlog_max:
                unmet.append(f"backlog {s['backlog_rows']} rows")
            if now - quiet_since < quiet_s:
                unmet.append(f"failures still rising ({fails[0]} publish, {fails[1]} read)")
            if not unmet and hub_check is not None and not await hub_check():
                unmet.append("hub not caught up")
            if not unmet:
                return True, "", now - t0
            why = ", ".join(unmet)
            if now - t0 >= timeout:
                return False, why, now - t0
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        """SIGTERM each worker by its pid (it closes its connections), SIGKILL if it has not
        ended in ``STOP_TIMEOUT`` s."""
        for w in self.workers:
            if w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.terminate()
        for w in self.workers:
            try:
                await wait_for(w.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                await w.proc.wait()
            if w.reader is not None:
                await asyncio.gather(w.reader, return_exceptions=True)
            if w.proc.stdin is not None:
                w.proc.stdin.close()
            w.log.close()
        self.workers.clear()
