"""Hub ingest's cost per device-minute of rollups, by how much of the hour it already holds.

    python -m bench.bench_rollup_fold                          # this tree only
    python -m bench.bench_rollup_fold --baseline main          # + the same run on main's hub

The hub's own apply path (``hub.sync.apply.Applier.apply_fetch`` on a real SQLite WAL store,
on this thread, no NATS): ``--devices`` devices with 5 host metrics each. First every device
reports ``held`` minutes of one hour (one row per message, fetches of 100 messages, as
ingest applies them); then the measured minutes: ``--rows`` more minutes per device, packed
``rows`` to a message (1: a report per device-minute, the simulator's default; 10: the
agent's default pacing, a report every 10 minutes). Printed: CPU microseconds of
``apply_fetch`` per device-minute (process time, best of ``--repeat``), for each ``held``.

Before the fold (issue 18) each fetch recomputed every touched (device, metric, hour) from
all of the hour's minute rows, so the cost grew through the hour; with the fold it does not.
``--baseline REV``: the same measurements with the hub code of commit REV (``git archive``
into a temp dir, run in a child process), first, in the same run; the load average is
printed before and after. The figures are CPU time of one thread, but a loaded machine still
slows it (caches, frequency): compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOUR = 3600
BASE = 1_700_000_000 // HOUR * HOUR
METRICS = ("cpu.percent", "mem.percent", "disk.percent", "load.1", "temp.celsius")
FETCH = 100


def measure(devices: int, held: int, rows: int, repeat: int) -> dict[str, float]:
    """µs of apply_fetch per device-minute for the ``rows`` minutes after ``held``."""
    from hub.store import Store
    from hub.sync.apply import Applier, Fetched
    from protocol.report import ReportBatch, ReportRow
    from protocol.subjects import report

    def row(seq: int, minute: int, d: int) -> ReportRow:
        v = 10 + (d * 7 + minute * 3) % 50
        metrics = {m: [v - 1.5, v + 0.25, v + 2.0, 6] for m in METRICS}
        return ReportRow(seq, "metrics.1m", 5.0, {"bucket": BASE + minute * 60, "metrics": metrics})

    def apply(store: Any, applier: Any, msgs: list[Any]) -> float:
        spent = 0.0
        for i in range(0, len(msgs), FETCH):
            t0 = time.process_time()
            out = applier.apply_fetch(store, msgs[i : i + FETCH])
            spent += time.process_time() - t0
            assert set(out.actions) == {"ack"}, out
        return spent

    best = float("inf")
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.open(Path(tmp) / "hub.db")
            ids = [f"d{d:05d}" for d in range(devices)]
            for d in ids:
                store.upsert_device(d, "bench")
            applier = Applier()
            seq = dict.fromkeys(ids, 0)

            def message(
                d: int, minutes: range, ids: list[str] = ids, seq: dict[str, int] = seq
            ) -> Any:
                dev = ids[d]
                prev = seq[dev]
                batch = ReportBatch(
                    dev, tuple(row(prev + i + 1, m, d) for i, m in enumerate(minutes)), prev
                )
                seq[dev] = prev + len(minutes)
                return Fetched(report(dev), batch.to_json(), None, 1)

            for minute in range(held):
                apply(
                    store, applier, [message(d, range(minute, minute + 1)) for d in range(devices)]
                )
            msgs = []
            for start in range(held, held + rows, rows):
                msgs += [message(d, range(start, start + rows)) for d in range(devices)]
            best = min(best, apply(store, applier, msgs) / (devices * rows) * 1e6)
            store.close()
    return {"held": held, "us_per_device_minute": best}


def child(args: argparse.Namespace) -> None:
    out = [measure(args.devices, h, args.rows, args.repeat) for h in parse(args.held)]
    print(json.dumps(out))


def parse(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def run_code(args: argparse.Namespace, root: Path | None) -> list[dict[str, float]]:
    """Measure in a child process whose ``hub`` package is ``root``'s (None: this tree)."""
    env = dict(os.environ)
    if root is not None:
        env.update(PYTHONPATH=str(root), PYTHONSAFEPATH="1")
    r = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", "--devices", str(args.devices),
         "--held", args.held, "--rows", str(args.rows), "--repeat", str(args.repeat)],
        capture_output=True, text=True, env=env, check=True, timeout=3600,
    )  # fmt: skip
    return list(json.loads(r.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--devices", type=int, default=300)
    ap.add_argument("--held", default="0,30,50", help="minutes of the hour already held")
    ap.add_argument("--rows", type=int, default=1, help="minutes per report message")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--baseline", default="", help="also measure the hub code of this commit")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if max(parse(args.held)) + args.rows > 60:
        ap.error("held + rows must stay within the hour (at most 60)")
    if args.child:
        child(args)
        return
    here = Path(__file__).resolve().parent.parent
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.devices} devices x {len(METRICS)} metrics, {args.rows} minute(s) per report"
          f" message, fetches of {FETCH} messages; best of {args.repeat}")  # fmt: skip
    runs: list[tuple[str, list[dict[str, float]]]] = []
    with tempfile.TemporaryDirectory(prefix="sb-bench-fold-") as tmp:
        if args.baseline:
            sha = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=here,
                                 capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
            archive = subprocess.run(["git", "archive", args.baseline], cwd=here,
                                     capture_output=True, check=True).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            runs.append((f"baseline {sha} ({args.baseline})", run_code(args, Path(tmp))))
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
        runs.append((f"this tree ({head or 'unknown'})", run_code(args, None)))
    print("| hub code | " + " | ".join(f"held {r['held']:.0f} min" for r in runs[0][1]) + " |")
    print("|---|" + "---|" * len(runs[0][1]))
    for label, res in runs:
        cells = " | ".join(f"{r['us_per_device_minute']:.1f} µs" for r in res)
        print(f"| {label} | {cells} |")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
