"""Hub retention: one prune pass over a seeded WAL database, beside a single bare DELETE.

    python -m bench.bench_retention                       # 100 devices x 5 metrics x 3 days
    python -m bench.bench_retention --devices 1000        # ~21.6 M minute rows, ~1.2 GB

The database is the hub's own (``hub.store.Store`` on a WAL file, every migration applied),
seeded with ``--days`` of minute rows (and their hourly rows) for ``--devices`` devices, then
pruned with the default policy (``retention_metrics_1m = 48h``: about a third of the rows
expire) by the real ``hub.retention.RetentionTask`` pass: chunks of at most 5,000 rows, each
its own transaction on one writer thread, as in the hub. Figures: rows/s, chunks, the longest
time one chunk held the writer (what ingest may wait behind), pages freed, then a second
pass 10 minutes later (the steady state: little or nothing to delete).

Baseline (same run, a copy of the same seeded file): one unchunked ``DELETE FROM metrics_1m
WHERE ts < cutoff`` in one transaction: the raw delete speed, and how long the writer would
be held without chunking.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.sim.benchhub import loadavg
from hub.config import HubConfig
from hub.metrics import HubMetrics
from hub.retention import RetentionPolicy, RetentionTask
from hub.store import Store

NAMES = ("cpu.percent", "mem.percent", "disk.percent", "load.1m", "temp.c")


class _Hub:
    """What ``RetentionTask`` needs of the hub: the store, its metrics, one writer thread."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.metrics = HubMetrics()
        self._writer = ThreadPoolExecutor(1)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)


def seed(path: Path, devices: int, days: int, now: float) -> tuple[int, int]:
    store = Store.open(path)
    try:
        minute = int(now // 60 * 60)
        for i in range(devices):
            d = f"dev-{i:05d}"
            store.upsert_device(d, "bench")
            rows = [
                (d, n, minute - k * 60, 1.0, 2.0, 3.0) for k in range(days * 1440) for n in NAMES
            ]
            store.put_metric_rows("1m", rows)
            hours = sorted({r[2] // 3600 * 3600 for r in rows})
            store.put_metric_rows("1h", [(d, n, h, 1.0, 2.0, 3.0) for h in hours for n in NAMES])
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(store.scalar("SELECT count(*) FROM metrics_1m")), int(
            store.scalar("SELECT count(*) FROM metrics_1h")
        )
    finally:
        store.close()


def baseline(path: Path, cutoff: int) -> tuple[int, float]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        n = conn.execute("DELETE FROM metrics_1m WHERE ts < ?", (cutoff,)).rowcount
        conn.execute("COMMIT")
        return n, time.perf_counter() - start
    finally:
        conn.close()


async def prune(path: Path, now: float) -> None:
    store = Store.open(path)
    hub = _Hub(store)
    try:
        task = RetentionTask(RetentionPolicy.from_config(HubConfig()))
        task._hub = hub  # type: ignore[assignment]  # the pass needs only store/metrics/call
        ps = int(store.scalar("PRAGMA page_size"))
        for label, at in (("first pass", now), ("steady pass, 10 min later", now + 600)):
            r = await task.run_pass(at)
            total = sum(r.deleted.values())
            rate = total / r.seconds if r.seconds else 0.0
            print(
                f"{label}: deleted {total:,} rows {dict(r.deleted)} in {r.seconds:.2f} s"
                f" = {rate:,.0f} rows/s; {r.chunks} chunks, longest chunk"
                f" {r.longest_chunk * 1000:.0f} ms; load {loadavg()}",
                flush=True,
            )
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        free = int(store.scalar("PRAGMA freelist_count"))
        print(f"freed {free:,} pages ({free * ps / 1e6:.0f} MB) to the free list for reuse")
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--days", type=int, default=3, help="days of minute rows per device")
    args = ap.parse_args()
    if not (1 <= args.devices <= 10_000 and 3 <= args.days <= 14):
        ap.error("--devices must be 1..10000 and --days 3..14 (the 48 h window must expire rows)")
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="sb-bench-retention-") as tmp:
        db = Path(tmp) / "hub.db"
        t0 = time.monotonic()
        n1m, n1h = seed(db, args.devices, args.days, now)
        size = db.stat().st_size
        print(
            f"seeded {args.devices} devices: {n1m:,} minute rows, {n1h:,} hour rows,"
            f" {size / 1e6:.0f} MB ({size / (n1m + n1h):.0f} bytes/row) in"
            f" {time.monotonic() - t0:.0f} s; load {loadavg()}",
            flush=True,
        )
        copy = Path(tmp) / "baseline.db"
        shutil.copyfile(db, copy)
        cutoff = int((now - 48 * 3600) // 3600 * 3600)
        n, secs = baseline(copy, cutoff)
        copy.unlink()
        print(
            f"baseline, one unchunked DELETE: {n:,} minute rows in {secs:.2f} s"
            f" = {n / secs:,.0f} rows/s, the writer held {secs * 1000:.0f} ms in one go",
            flush=True,
        )
        asyncio.run(prune(db, now))
        print(f"file {db.stat().st_size / 1e6:.0f} MB after (auto_vacuum off: it does not shrink)")


if __name__ == "__main__":
    main()
