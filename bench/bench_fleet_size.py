"""How many devices one hub holds: step the simulated fleet up at default intervals.

    python -m bench.bench_fleet_size                        # 200, 1000 devices (short)
    python -m bench.bench_fleet_size --steps 1000,5000,10000,25000,50000,100000 --window 60

A real ``signalbeam-hub run`` (127.0.0.1, litestream replicating to a local file replica
unless ``--no-litestream``) with ``max(steps)`` devices written by the bulk path
(bench/sim/benchhub.py), then the simulator (bench/sim, shared connections as the hub's
user) brings ``N`` of them online per step: heartbeats every ``--heartbeat`` s (30), a
``metrics.1m`` row every ``--rollup`` s (60), each device's first beat spread over one
interval. Per step, after ``--warmup`` s (one heartbeat interval by default), for ``--window``
s:

- hub CPU: the hub process and its children (nats-server, litestream), % of one core;
- simulator CPU: this process (devices + the probe), % of one core, apart;
- heartbeat -> visible lag: a probe picks a random online device, sends an extra heartbeat
  and polls ``devices.get`` every 25 ms until the hub's record shows that heartbeat's ``ts``
  or a newer one (at most 4 probes in flight; a probe gives up at 10 s and counts as 10 s);
- DB growth: bytes in use (pages minus free pages) at the window's ends, per device per day,
  extrapolated from the window (the window has no hourly rollups: see docs/performance.md);
- litestream lag (``--litestream``, once per step): a group created through the API, then
  the replica restored to a temp file until it has it; the restore's own time is printed.

Baseline (same run): the first step also measures the idle hub (no device online) and the
API round trip (``devices.get`` of a device, not polled for a change).
Pass: hub CPU < 50 % of the machine (``--cores``, default the CPU count) and lag p99 < 2 s.
Stepping stops at the first failing step.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.sim import SimFleet, SimOptions
from bench.sim.benchhub import BenchHub, CpuMeter, loadavg, pct
from tui.client import HubClient

PREFIX = "fl"
PROBE_TIMEOUT = 10.0


async def probe_lag(admin: HubClient, fleets: list[SimFleet], rng: random.Random) -> float:
    fleet = rng.choice(fleets)
    dev = fleet.device(rng.choice(fleet.ids))
    t0 = time.perf_counter()
    ts = await dev.send_heartbeat()
    if ts is None:
        return float("nan")
    while time.perf_counter() - t0 < PROBE_TIMEOUT:
        got = await admin.call("devices.get", {"id": dev.id})
        seen = ((got.get("heartbeat") or {}).get("state") or {}).get("ts")
        # A scheduled beat may overtake the probe's: a newer one shows ours arrived too.
        if isinstance(seen, int | float) and seen >= ts:
            return time.perf_counter() - t0
        await asyncio.sleep(0.025)
    return PROBE_TIMEOUT


async def measure_lag(
    admin: HubClient, fleets: list[SimFleet], seconds: float, rng: random.Random
) -> list[float]:
    out: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            lag = await probe_lag(admin, fleets, rng)
            if lag == lag:  # not NaN
                out.append(lag)
            await asyncio.sleep(0.2)

    await asyncio.gather(*(worker() for _ in range(4)))
    return out


async def litestream_lag(hub: BenchHub, admin: HubClient, name: str) -> tuple[float, float]:
    """(seconds until the replica has a new group, seconds of the last restore)."""
    t0 = time.perf_counter()
    await admin.call("groups.create", {"name": name})
    restore = 0.0
    while time.perf_counter() - t0 < 120:
        found, restore = await asyncio.to_thread(
            hub.replica_has, "SELECT 1 FROM groups WHERE name = ?", (name,)
        )
        if found:
            return time.perf_counter() - t0, restore
        await asyncio.sleep(0.2)
    return float("inf"), restore


async def run(args: argparse.Namespace, work: Path) -> None:
    steps = sorted(int(s) for s in args.steps.split(","))
    ids = [f"{PREFIX}-{i:06d}" for i in range(steps[-1])]
    cores = args.cores or os.cpu_count() or 1
    print(f"machine: {cores} cores, load average before: {loadavg()}")
    t0 = time.perf_counter()
    hub = BenchHub(work / "hub", seed_devices=ids, litestream=args.litestream)
    print(f"bulk seed of {len(ids)} devices: {hub.seed_seconds:.2f} s;"
          f" hub ready {time.perf_counter() - t0:.1f} s after init")  # fmt: skip
    rng = random.Random(1)
    fleets: list[SimFleet] = []
    me = psutil.Process()
    results: list[dict[str, Any]] = []
    try:
        async with HubClient(hub.url, hub.admin_key, timeout=30) as admin:
            # Baselines: the idle hub, and one API round trip.
            cpu = CpuMeter(hub.processes())
            await asyncio.sleep(min(10.0, args.window))
            idle_cpu = cpu.percent()
            rtt = []
            for _ in range(50):
                a = time.perf_counter()
                await admin.call("devices.get", {"id": ids[0]})
                rtt.append(time.perf_counter() - a)
            print(f"baseline: idle hub CPU {idle_cpu:.1f} % of a core;"
                  f" devices.get round trip p50 {pct(rtt, 50) * 1000:.1f} ms"
                  f" p99 {pct(rtt, 99) * 1000:.1f} ms")  # fmt: skip
            online = 0
            for n in steps:
                opts = SimOptions(
                    hub_url=hub.client_url, count=n - online, prefix=PREFIX, first_index=online,
                    heartbeat_s=args.heartbeat, rollup_s=args.rollup, apply_s=0.2,
                    connections=args.connections, shared_user="hub",
                    shared_password=hub.secret("hub_password"), enroll=False, backfill_minutes=0, id_digits=6,
                )  # fmt: skip
                fleet = SimFleet(opts)
                t_start = time.perf_counter()
                await fleet.start()
                fleets.append(fleet)
                online = n
                start_s = time.perf_counter() - t_start
                await asyncio.sleep(args.warmup if args.warmup >= 0 else args.heartbeat)
                hub_cpu = CpuMeter(hub.processes())
                sim_cpu = CpuMeter([me])
                db0, w0 = hub.db_bytes(), time.monotonic()
                lags = await measure_lag(admin, fleets, args.window, rng)
                db1, w1 = hub.db_bytes(), time.monotonic()
                hc, sc = hub_cpu.percent(), sim_cpu.percent()
                growth = (db1 - db0) / (w1 - w0) * 86400 / n
                st = [f.stats() for f in fleets]
                row = {
                    "n": n,
                    "hub_cpu": hc,
                    "sim_cpu": sc,
                    "p50": pct(lags, 50),
                    "p99": pct(lags, 99),
                    "max": max(lags) if lags else float("nan"),
                    "probes": len(lags),
                    "growth_kb": growth / 1024,
                    "db_mb": db1 / 1e6,
                    "start_s": start_s,
                    "backlog": sum(s["backlog_rows"] for s in st),
                    "fail": sum(s["publish_failures"] for s in st),
                    "load": loadavg(),
                }
                if args.litestream:
                    row["ls_lag"], row["ls_restore"] = await litestream_lag(hub, admin, f"m{n}")
                online_hub = hub.query("SELECT count(*) FROM devices WHERE status = 'online'")
                row["hub_online"] = online_hub[0][0]
                results.append(row)
                ok = hc < 50 * cores and row["p99"] < 2.0
                print(
                    f"N={n:>6}: hub CPU {hc:5.1f} % of a core ({hc / cores:4.1f} % of machine),"
                    f" sim CPU {sc:5.1f} %, lag p50 {row['p50']:.3f} s p99 {row['p99']:.3f} s"
                    f" ({len(lags)} probes), online at hub {row['hub_online']},"
                    f" DB {row['db_mb']:.1f} MB (+{row['growth_kb']:.1f} KB/device/day),"
                    f" sim backlog {row['backlog']} rows, publish failures {row['fail']},"
                    + (
                        f" litestream lag {row['ls_lag']:.2f} s (restore {row['ls_restore']:.2f} s),"
                        if args.litestream
                        else ""
                    )
                    + f" start {start_s:.1f} s, load {row['load']}"
                    + ("" if ok else "  <- over the limit"),
                    flush=True,
                )
                if not ok:
                    break
    finally:
        for f in fleets:
            await f.stop()
        hub.stop()
    passing = [r["n"] for r in results if r["hub_cpu"] < 50 * cores and r["p99"] < 2.0]
    print(f"largest passing N: {max(passing) if passing else 0} (goal 100000);"
          f" criterion hub CPU < 50 % of {cores} cores and lag p99 < 2 s")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", default="200,1000")
    ap.add_argument("--window", type=float, default=20.0, help="measured seconds per step")
    ap.add_argument("--warmup", type=float, default=-1, help="seconds (default: one heartbeat)")
    ap.add_argument("--heartbeat", type=float, default=30.0)
    ap.add_argument("--rollup", type=float, default=60.0)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--cores", type=int, default=0)
    ap.add_argument("--no-litestream", dest="litestream", action="store_false")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-bench-fleet-"))
    try:
        asyncio.run(run(args, work))
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
