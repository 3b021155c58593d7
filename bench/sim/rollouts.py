"""What the rollout benchmarks share (bench_fleet_rollout, bench_rollout_phases): a real hub
with ``ids`` seeded (tag ``bench``) and the simulator's worker processes, the fleet brought
online and settled before anything is measured, the bench bundle, and the rollout's progress
read from the hub's SQLite (``rollouts.get`` would page every device).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from bench.sim.benchhub import BenchHub
from bench.sim.workers import SimWorkers


def spec(version: str) -> dict[str, Any]:
    """The benchmarks' bundle: one container the simulator never pulls."""
    return {"bundle": "bench", "version": version,
            "containers": [{"name": "web", "image": f"127.0.0.1:5000/bench/web:{version}"}]}  # fmt: skip


def fleet_hub(
    work: Path, ids: list[str], prefix: str, apply_s: float
) -> tuple[BenchHub, SimWorkers]:
    """The hub with ``ids`` seeded and the (not yet started) simulator workers for them."""
    hub = BenchHub(work / "hub", seed_devices=ids)
    workers = SimWorkers(hub.client_url, "hub", hub.secret("hub_password"), log_dir=work,
                         prefix=prefix, apply_s=apply_s, lifetime_s=3600)  # fmt: skip
    return hub, workers


def all_online(hub: BenchHub, count: int) -> Callable[[], Awaitable[bool]]:
    """A ``settle`` check: the hub has every device online."""

    async def check() -> bool:
        q = "SELECT count(*) FROM devices WHERE status = 'online'"
        return bool(hub.query(q)[0][0] >= count)

    return check


def backlog_max(count: int) -> int:
    """The outbox rows a settled fleet may still hold (a minute's rollups of a sixtieth)."""
    return max(100, count // 60)


async def bring_online(hub: BenchHub, workers: SimWorkers, count: int, ramp_s: float) -> None:
    """Start the workers' ``count`` devices over ``ramp_s`` s and wait (at most 120 s after
    the ramp) until the burst drained and the hub has them all online; prints how long."""
    t0 = time.perf_counter()
    await workers.add(0, count, ramp_s=ramp_s)
    await asyncio.sleep(ramp_s)
    ok, why, _ = await workers.settle(
        count, 120, hub_check=all_online(hub, count), backlog_max=backlog_max(count)
    )
    if not ok:
        raise TimeoutError(f"fleet not settled in {ramp_s + 120:.0f} s: {why}")
    print(f"{count} devices online and settled {time.perf_counter() - t0:.1f} s"
          f" after start ({len(workers.workers)} simulator workers)")  # fmt: skip


def status(hub: BenchHub, rollout_id: str) -> str:
    return str(hub.query("SELECT status FROM rollouts WHERE id = ?", (rollout_id,))[0][0])


def counts(hub: BenchHub, rollout_id: str) -> dict[str, int]:
    """The rollout's devices by state (``Succeeded``, ``Updating``, ...)."""
    return dict(hub.query("SELECT state, count(*) FROM rollout_targets"
                          " WHERE rollout_id = ? GROUP BY state", (rollout_id,)))  # fmt: skip


SIM_FIGURES = ("revisions", "applies", "probes", "probe_failures", "publish_failures")


def simulator_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """What the simulator did between two ``workers.totals()``: ``revisions 61, applies ...``."""
    return ", ".join(f"{k} {after[k] - before[k]}" for k in SIM_FIGURES)


def fleet_args(ap: argparse.ArgumentParser) -> None:
    """The options every rollout benchmark takes: the fleet, its apply time and its ramp."""
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--apply", type=float, default=1.0, help="simulated apply seconds")
    ap.add_argument("--ramp", type=float, default=30.0, help="bring the fleet online over this")


def run_in_workdir(prefix: str, run: Callable[[Path], Coroutine[Any, Any, None]]) -> None:
    """``run(work)`` in a fresh temporary directory, removed after whatever happens."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        asyncio.run(run(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
