"""One simulator worker process: ``count`` devices over shared connections, stats on stdout.

    SB_SIM_PASSWORD=... python -m bench.sim.worker --hub-url nats://127.0.0.1:4222 \\
        --user hub --first-index 0 --count 20000 --ramp 30 --lifetime 1800

Started by the fleet benchmarks (``bench.sim.workers.SimWorkers``) so that tens of thousands
of simulated devices do not share an event loop (or a core) with the process that measures
the hub. The devices must already exist on the hub (the bulk path): they are carried by
``--connections`` connections logged in as ``--user``, with the password from the
environment (``SB_SIM_PASSWORD``) so it is not on the command line.

stdout, one JSON object per line: ``{"event": "ready"}`` once connected, then
``{"event": "stats", ...SimFleet.stats()}`` every ``--status-every`` s. The worker ends on
its own after ``--lifetime`` s, on SIGTERM/SIGINT, or when its stdin reaches end of file (the
parent closed it or died), so a crashed benchmark never leaves devices running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time

from bench.sim.fleet import SimFleet
from bench.sim.options import SimError, SimOptions
from sbutil.tasks import wait_for

PASSWORD_ENV = "SB_SIM_PASSWORD"
MAX_LIFETIME = 4 * 3600.0


def emit(doc: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def run(args: argparse.Namespace) -> int:
    opts = SimOptions(
        hub_url=args.hub_url, count=args.count, prefix=args.prefix, first_index=args.first_index,
        id_digits=args.id_digits, heartbeat_s=args.heartbeat, rollup_s=args.rollup,
        flush_s=args.flush,
        apply_s=args.apply, connections=args.connections, shared_user=args.user,
        shared_password=os.environ.get(PASSWORD_ENV, ""), enroll=False, backfill_minutes=0,
        ramp_s=args.ramp, seed=args.first_index, tags=(),
    )  # fmt: skip
    fleet = SimFleet(opts)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    watch = loop.create_task(stdin_closed())
    watch.add_done_callback(lambda _: done.set())
    t0 = time.monotonic()
    try:
        await fleet.start()
        emit({"event": "ready", "pid": os.getpid(), "seconds": round(time.monotonic() - t0, 3)})
        while not done.is_set() and time.monotonic() - t0 < args.lifetime:
            with contextlib.suppress(TimeoutError):
                await wait_for(done.wait(), args.status_every)
            emit({"event": "stats", "t": round(time.time(), 3), **fleet.stats()})
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        await fleet.stop()
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hub-url", required=True, help="the hub's NATS client URL")
    ap.add_argument("--user", required=True, help=f"shared user (password in ${PASSWORD_ENV})")
    ap.add_argument("--prefix", default="fl")
    ap.add_argument("--first-index", type=int, default=0)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--id-digits", type=int, default=6)
    ap.add_argument("--heartbeat", type=float, default=30.0)
    ap.add_argument("--rollup", type=float, default=60.0)
    ap.add_argument(
        "--flush", type=float, default=0.0, help="rollups wait this long to share a report"
    )
    ap.add_argument("--apply", type=float, default=0.2, help="simulated apply seconds")
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--ramp", type=float, default=0.0, help="bring devices online over this")
    ap.add_argument("--lifetime", type=float, default=1800.0, help="exit after this many s")
    ap.add_argument("--status-every", type=float, default=1.0)
    args = ap.parse_args()
    if not 0 < args.lifetime <= MAX_LIFETIME:
        ap.error(f"--lifetime must be in (0, {MAX_LIFETIME:g}]")
    if not 0.1 <= args.status_every <= 60:
        ap.error("--status-every must be in [0.1, 60]")
    try:
        sys.exit(asyncio.run(run(args)))
    except SimError as exc:
        emit({"event": "error", "error": str(exc)})
        sys.exit(2)


if __name__ == "__main__":
    main()
