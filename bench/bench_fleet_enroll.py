"""Enrollment through the real path: how fast a hub takes on devices, and how that changes as
its nats-server config holds more device users.

    python -m bench.bench_fleet_enroll                    # steps 100, 300, JWT mode
    python -m bench.bench_fleet_enroll --steps 500,1000,2000 --nats-auth password

A real ``signalbeam-hub run``; the simulator (bench/sim, per-device mode) enrolls each step's
devices with a registration token over the bootstrap user, ``--concurrency`` requests in
flight, then connects every device with its own credentials. ``--nats-auth jwt`` (the
default of new hubs): each device makes its nkey, the hub signs a JWT for it (no config
reload), and the device logs in with the JWT and a nonce signed by its seed, as an agent
does. ``password``: the hub handles one request at a time, each rewriting the nats-server
config with every device user and reloading it (waiting until ``/varz`` shows the reload). Per step: enrollments/s and per-request p50/p99 (queueing
included). Baseline (same run): one enrollment into the empty hub.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from bench.sim import SimFleet, SimOptions
from bench.sim.benchhub import BenchHub, CpuMeter, loadavg, pct
from tui.client import HubClient


async def run(args: argparse.Namespace, work: Path) -> None:
    steps = sorted(int(s) for s in args.steps.split(","))
    hub = BenchHub(work / "hub", init_flags=("--nats-auth", args.nats_auth))
    fleets: list[SimFleet] = []
    print(f"nats_auth {args.nats_auth}; load average before: {loadavg()}")
    try:
        async with HubClient(hub.url, hub.admin_key, timeout=30) as admin:
            tok = await admin.call("tokens.create", {"tenant": "bench", "max_uses": steps[-1] + 1})
            enrolled = 0
            for n in [1, *steps]:
                opts = SimOptions(hub_url=hub.enroll_url, token=tok["token"], count=n - enrolled,
                                  prefix="en", id_digits=6, first_index=enrolled,
                                  enroll_concurrency=args.concurrency, backfill_minutes=0)  # fmt: skip
                fleet = SimFleet(opts)
                cpu = CpuMeter(hub.processes())
                t0 = time.perf_counter()
                await fleet.start()
                took = time.perf_counter() - t0
                fleets.append(fleet)
                per = fleet.enroll_seconds
                label = "baseline: 1 into an empty hub" if n == 1 else f"{enrolled} -> {n} devices"
                print(f"{label}: {n - enrolled} enrolled+connected in {took:.1f} s"
                      f" ({(n - enrolled) / took:.1f}/s), request p50 {pct(per, 50):.3f} s"
                      f" p99 {pct(per, 99):.3f} s, retries {fleet.enroll_retries}, hub CPU {cpu.percent():.0f} % of a core,"
                      f" load {loadavg()}", flush=True)  # fmt: skip
                enrolled = n
    finally:
        for f in fleets:
            await f.stop()
        hub.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", default="100,300")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument(
        "--nats-auth",
        choices=("jwt", "password"),
        default="jwt",
        help="the hub's NATS auth mode (jwt: per-device JWT logins, the default of new hubs)",
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-bench-enroll-"))
    try:
        asyncio.run(run(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
