"""The update gate's cost: what a deferred device pays on every reconcile-loop poll.

    python -m bench.bench_update_gate                   # 3 windows, 3 lock files, 20,000 checks

While a revision waits (an update lock, or outside its maintenance windows) the agent's loop
re-checks the gate every poll (1 s): ``agent.updategate.UpdateGate.check`` = list the lock
directory, read the local-API locks from the store, parse the windows and decide
(``agent.reconcile.gates.decide``, pure). Figures: microseconds per pure decision and per
full check (real SQLite store in WAL, real lock files on disk), the CPU share that is at one
check a second, and the load average.

Baseline (same run): one ``os.stat`` of the lock directory and one ``SELECT 1`` on the same
store, the least any check could do, and the pure decision alone.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.reconcile.gates import Lock, decide
from agent.store import Store, updatelocks
from agent.updategate import UpdateGate
from bench.sim.benchhub import loadavg
from bundles.windows import parse_windows
from protocol.desired import DesiredState

WINDOWS = ("Sat,Sun 02:00-05:00", "Mon-Fri 22:30-01:00", "* 12:00-12:15")


def per_call(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checks", type=int, default=20_000)
    ap.add_argument("--lock-files", type=int, default=3)
    args = ap.parse_args()
    n = max(1, min(args.checks, 1_000_000))  # bounded
    tz = ZoneInfo("Europe/Berlin")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = Store.open(root / "agent.db", device_id="bench")
        lock_dir = root / "locks"
        lock_dir.mkdir()
        for i in range(max(0, min(args.lock_files, 64))):
            (lock_dir / f"app{i}.lock").write_text(f"app {i}\n")
        updatelocks.hold(store, "anna", "bench", "bench")
        gate = UpdateGate(store, lock_dir, tz)
        desired = DesiredState(7, {"bundle": "b", "version": "2"}, maintenance_windows=WINDOWS)
        windows = parse_windows(WINDOWS)
        now = datetime.now(UTC)
        locks = [Lock("anna", 0.0, "api")]

        base_stat = per_call(lambda: os.stat(lock_dir), n)
        base_sql = per_call(lambda: store.read_now(lambda c: c.execute("SELECT 1").fetchone()), n)
        pure_win = per_call(lambda: decide(now=now, tz=tz, locks=(), windows=windows), n)
        pure_lock = per_call(lambda: decide(now=now, tz=tz, locks=locks, windows=windows), n)
        full = per_call(lambda: gate.check(desired, None), n)
        assert not gate.check(desired, None).allow
        store.close()
    print(f"checks per figure: {n}; lock files: {args.lock_files} (+1 API lock); "
          f"windows: {len(WINDOWS)}")  # fmt: skip
    print(f"baseline  os.stat(lock dir):        {base_stat:8.1f} us")
    print(f"baseline  SELECT 1 on the store:    {base_sql:8.1f} us")
    print(f"pure      decide, window deferral:  {pure_win:8.1f} us")
    print(f"pure      decide, lock deferral:    {pure_lock:8.1f} us")
    print(f"full      UpdateGate.check:         {full:8.1f} us "
          f"= {full / 1e4:.3f} % of one core at one check a second")  # fmt: skip
    print(f"load average: {loadavg()}")


if __name__ == "__main__":
    main()
