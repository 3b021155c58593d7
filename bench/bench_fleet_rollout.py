"""A rollout to a whole simulated fleet: time until every device is Succeeded.

    python -m bench.bench_fleet_rollout                    # 1000 devices
    python -m bench.bench_fleet_rollout --devices 10000

A real ``signalbeam-hub run`` with ``--devices`` devices (bulk path, tag ``bench``), all
brought online by the simulator in worker processes (``bench.sim.worker``, at most 20 000
devices each, 2 shared connections each; heartbeats 30 s, rollups 60 s, a simulated apply of
``--apply`` s), ramped over ``--ramp`` s and settled before the rollouts start. A rollout of ``bench@1.0.0`` to ``tag:bench`` (one wave,
no canary) is started through the API; progress is read from the hub's SQLite every 0.5 s
(``rollouts.get`` would return every device), printed every 10 s, and the rollout is done
when its status is ``succeeded``. Printed too: the time until 50/90/99/100 % of the devices
were Succeeded, so a tail (e.g. the controller's 30 s re-publish to devices that missed
their prompt) shows apart from the bulk. Path per device: the controller writes the device-level
assignment, the desired writer puts the KV key, the republished prompt reaches the
simulator, which reads the key (direct get), reports ``desired`` + ``deployment applying``,
then ``healthy`` after the apply time; ingest applies the rows and the controller observes.

Baseline (same run, same hub, same fleet online): a rollout of ``bench@0.9.0`` to one device
(``device:<first>``), the fixed cost of the path.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from bench.sim import rollouts as fr
from bench.sim.benchhub import BenchHub, CpuMeter, loadavg
from tui.client import HubClient

PREFIX = "ro"


async def rollout(hub: BenchHub, admin: HubClient, target: str, version: str) -> float:
    r = await admin.call("rollouts.start", {"bundle": f"bench@{version}", "target": target})
    t0 = time.perf_counter()
    last_print = t0
    marks: dict[int, float] = {}
    while True:
        status = fr.status(hub, r["id"])
        now = time.perf_counter()
        counts = fr.counts(hub, r["id"])
        total = sum(counts.values())
        for p in (50, 90, 99, 100):
            if p not in marks and total and counts.get("Succeeded", 0) * 100 >= p * total:
                marks[p] = now - t0
        if status != "running" or now - last_print >= 10:
            print(f"  {now - t0:6.1f} s: {status} {counts}", flush=True)
            last_print = now
        if status != "running":
            if status != "succeeded":
                raise RuntimeError(f"rollout {r['id']} ended {status}")
            if total > 1:
                print("  Succeeded: " + ", ".join(f"{p} % at {t:.1f} s" for p, t in marks.items()))
            return now - t0
        if now - t0 > 1800:
            raise TimeoutError("rollout not done in 30 min")
        await asyncio.sleep(0.5)


async def run(args: argparse.Namespace, work: Path) -> None:
    ids = [f"{PREFIX}-{i:06d}" for i in range(args.devices)]
    print(f"load average before: {loadavg()}")
    hub, workers = fr.fleet_hub(work, ids, PREFIX, args.apply)
    try:
        async with HubClient(hub.url, hub.admin_key, timeout=60) as admin:
            for v in ("0.9.0", "1.0.0"):
                await admin.call("bundles.push", {"spec": fr.spec(v)})
            await fr.bring_online(hub, workers, len(ids), args.ramp)
            base = await rollout(hub, admin, f"device:{ids[0]}", "0.9.0")
            before = workers.totals()
            hub_cpu, sim_cpu = CpuMeter(hub.processes()), CpuMeter(workers.processes())
            took = await rollout(hub, admin, "tag:bench", "1.0.0")
            hc, sc = hub_cpu.percent(), sim_cpu.percent()
            await asyncio.sleep(1.5)  # the workers' stats lines come once a second
            after = workers.totals()
            print(f"baseline: rollout to 1 device succeeded in {base:.2f} s")
            print(f"rollout to {len(ids)} devices succeeded in {took:.1f} s"
                  f" ({len(ids) / took:,.0f} devices/s); hub CPU {hc:.0f} % of a core,"
                  f" simulator {sc:.0f} %; load average {loadavg()}")  # fmt: skip
            print(f"simulator during the rollout: {fr.simulator_delta(before, after)}")
    finally:
        await workers.stop()
        hub.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    fr.fleet_args(ap)
    args = ap.parse_args()
    fr.run_in_workdir("sb-bench-rollout-", lambda work: run(args, work))


if __name__ == "__main__":
    main()
