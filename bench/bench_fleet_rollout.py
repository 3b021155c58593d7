"""A rollout to a whole simulated fleet: time until every device is Succeeded.

    python -m bench.bench_fleet_rollout                    # 1000 devices
    python -m bench.bench_fleet_rollout --devices 10000

A real ``signalbeam-hub run`` with ``--devices`` devices (bulk path, tag ``bench``), all
brought online by the simulator (4 shared connections; heartbeats 30 s, rollups 60 s, a
simulated apply of ``--apply`` s). A rollout of ``bench@1.0.0`` to ``tag:bench`` (one wave,
no canary) is started through the API; progress is read from the hub's SQLite every 0.5 s
(``rollouts.get`` would return every device), printed every 10 s, and the rollout is done
when its status is ``succeeded``. Path per device: the controller writes the device-level
assignment, the desired writer puts the KV key, the republished prompt reaches the
simulator, which reads the key (direct get), reports ``desired`` + ``deployment applying``,
then ``healthy`` after the apply time; ingest applies the rows and the controller observes.

Baseline (same run, same hub, same fleet online): a rollout of ``bench@0.9.0`` to one device
(``device:<first>``), the fixed cost of the path.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.sim import SimFleet, SimOptions
from bench.sim.benchhub import BenchHub, CpuMeter, loadavg
from tui.client import HubClient

PREFIX = "ro"


def spec(version: str) -> dict[str, Any]:
    return {"bundle": "bench", "version": version,
            "containers": [{"name": "web", "image": f"127.0.0.1:5000/bench/web:{version}"}]}  # fmt: skip


async def rollout(hub: BenchHub, admin: HubClient, target: str, version: str) -> float:
    r = await admin.call("rollouts.start", {"bundle": f"bench@{version}", "target": target})
    t0 = time.perf_counter()
    last_print = t0
    while True:
        status = hub.query("SELECT status FROM rollouts WHERE id = ?", (r["id"],))[0][0]
        now = time.perf_counter()
        if status != "running" or now - last_print >= 10:
            counts = dict(hub.query("SELECT state, count(*) FROM rollout_targets"
                                    " WHERE rollout_id = ? GROUP BY state", (r["id"],)))  # fmt: skip
            print(f"  {now - t0:6.1f} s: {status} {counts}", flush=True)
            last_print = now
        if status != "running":
            if status != "succeeded":
                raise RuntimeError(f"rollout {r['id']} ended {status}")
            return now - t0
        if now - t0 > 1800:
            raise TimeoutError("rollout not done in 30 min")
        await asyncio.sleep(0.5)


async def run(args: argparse.Namespace, work: Path) -> None:
    ids = [f"{PREFIX}-{i:06d}" for i in range(args.devices)]
    print(f"load average before: {loadavg()}")
    hub = BenchHub(work / "hub", seed_devices=ids)
    fleet = SimFleet(SimOptions(
        hub_url=hub.client_url, count=args.devices, prefix=PREFIX, id_digits=6,
        apply_s=args.apply, connections=4, shared_user="hub",
        shared_password=hub.secret("hub_password"), enroll=False, backfill_minutes=0,
    ))  # fmt: skip
    try:
        async with HubClient(hub.url, hub.admin_key, timeout=60) as admin:
            for v in ("0.9.0", "1.0.0"):
                await admin.call("bundles.push", {"spec": spec(v)})
            await fleet.start()
            t0 = time.perf_counter()
            while hub.query("SELECT count(*) FROM devices WHERE status = 'online'")[0][0] < len(
                ids
            ):
                if time.perf_counter() - t0 > 120:
                    raise TimeoutError("fleet not online in 120 s")
                await asyncio.sleep(0.5)
            print(f"{len(ids)} devices online {time.perf_counter() - t0:.1f} s after start")
            base = await rollout(hub, admin, f"device:{ids[0]}", "0.9.0")
            hub_cpu, sim_cpu = CpuMeter(hub.processes()), CpuMeter([psutil.Process()])
            took = await rollout(hub, admin, "tag:bench", "1.0.0")
            print(f"baseline: rollout to 1 device succeeded in {base:.2f} s")
            print(f"rollout to {len(ids)} devices succeeded in {took:.1f} s"
                  f" ({len(ids) / took:,.0f} devices/s); hub CPU {hub_cpu.percent():.0f} % of a"
                  f" core, simulator {sim_cpu.percent():.0f} %; load average {loadavg()}")  # fmt: skip
            print(f"simulator: {fleet.stats()}")
    finally:
        await fleet.stop()
        hub.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--apply", type=float, default=1.0, help="simulated apply seconds")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-bench-rollout-"))
    try:
        asyncio.run(run(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
