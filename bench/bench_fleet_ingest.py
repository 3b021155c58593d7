"""Hub ingest: outbox rows ("deltas") per second through the real hub, beside the raw limit.

    python -m bench.bench_fleet_ingest                          # 200 devices x 500 rows
    python -m bench.bench_fleet_ingest --devices 1000 --rows-per-device 1000

Load: ``--devices`` devices, each with ``--rows-per-device`` outbox rows (half ``event``,
half ``metrics.1m`` with 5 host metrics: what a device's day is mostly made of), packed by the
agent's own packer (``agent.sync.batching.pack``, 100 rows per report) into chained reports
and published with ``js.publish_async`` (4 connections, the hub's user; no per-device users
are involved in ingest).

- **hub**: a real ``signalbeam-hub run`` (the devices written by the bulk path), timed from
  the first publish until every device's ``last_applied_seq`` is its last row (each row
  applied by the hub's rules: events, minute rollups plus the hourly recompute, one
  transaction per fetch).
- **raw** (baseline, same run, same messages): a bare nats-server with the same stream
  config (``SB_REPORTS``, work queue, file storage), published first, then a bare durable
  pull consumer: fetch 100, ``json.loads`` each report, ``executemany`` every row into one
  SQLite table (WAL), commit per fetch, ack — no ordering, no validation, no logic.
Goal: hub ≥ 50 % of raw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from agent.sync.batching import Batch, pack
from bench.sim.benchhub import BenchHub, CpuMeter, loadavg
from protocol.report import MSG_ID_HEADER, RawRow
from protocol.subjects import JS_DOMAIN, REPORT_STREAM, REPORT_WILDCARD, report
from tests.harness.nats import NatsHub

CONNS = 4


def device_rows(n: int, t0: float) -> list[RawRow]:
    rows: list[RawRow] = []
    bucket = int(t0 // 60 * 60) - n * 60
    for seq in range(1, n + 1):
        ts = t0 + seq * 0.001
        if seq % 2:
            payload = {"seq": (seq + 1) // 2, "kind": "container.started", "severity": "info",
                       "message": f"web started ({seq})", "data": {"i": seq}, "ts": ts, "mono": 1.0}  # fmt: skip
            rows.append((seq, "event", ts, json.dumps(payload, separators=(",", ":"))))
        else:
            bucket += 60
            m = {k: [1.0, 2.5, 4.0, 6] for k in
                 ("cpu.percent", "mem.percent", "disk.percent", "load.1", "temp.celsius")}  # fmt: skip
            rows.append((seq, "metrics.1m", ts, json.dumps({"bucket": bucket, "metrics": m})))
    return rows


def batches(ids: list[str], rows_per_device: int) -> list[tuple[str, Batch]]:
    t0 = time.time()
    rows = device_rows(rows_per_device, t0)
    per_device = {d: pack(d, rows, max_rows=100) for d in ids}
    out: list[tuple[str, Batch]] = []
    # Interleave devices, in chain order per device: what many devices draining at once look like.
    for i in range(max(len(b) for b in per_device.values())):
        for d in ids:
            if i < len(per_device[d]):
                out.append((d, per_device[d][i]))
    return out


async def publish(url: str, msgs: list[tuple[str, Batch]], **auth: str) -> float:
    conns = [await nats.connect(url, pending_size=256 * 1024 * 1024, **auth) for _ in range(CONNS)]
    try:
        t0 = time.perf_counter()
        futs = []
        for i, (d, b) in enumerate(msgs):
            # One device's batches always on the same connection: its chain stays in order.
            js = conns[hash(d) % CONNS].jetstream(domain=JS_DOMAIN)
            futs.append(await js.publish_async(report(d), b.body, wait_stall=30,
                                               headers={MSG_ID_HEADER: b.msg_id}))  # fmt: skip
            if i % 2000 == 1999:
                await asyncio.gather(*futs)
                futs = []
        await asyncio.gather(*futs)
        return time.perf_counter() - t0
    finally:
        for nc in conns:
            await nc.close()


async def raw(work: Path, msgs: list[tuple[str, Batch]], total_rows: int) -> tuple[float, float]:
    server = NatsHub(work / "raw-nats")
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream(domain=JS_DOMAIN)
        await js.add_stream(StreamConfig(
            name=REPORT_STREAM, subjects=[REPORT_WILDCARD], retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE, duplicate_window=7200, max_msg_size=264 * 1024))  # fmt: skip
        pub_s = await publish(server.url, msgs)
        sub = await js.pull_subscribe(REPORT_WILDCARD, "raw", stream=REPORT_STREAM,
                                      config=ConsumerConfig(max_ack_pending=20_000))  # fmt: skip
        db = sqlite3.connect(work / "raw.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE rows (device TEXT, seq INTEGER, kind TEXT, ts REAL, payload TEXT)")
        done = 0
        t0 = time.perf_counter()
        while done < total_rows:
            fetched = await sub.fetch(100, timeout=5)
            vals = []
            for m in fetched:
                doc = json.loads(m.data)
                vals += [(doc["device_id"], r["seq"], r["kind"], r["ts"], json.dumps(r["payload"]))
                         for r in doc["rows"]]  # fmt: skip
            db.execute("BEGIN")
            db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?)", vals)
            db.execute("COMMIT")
            for m in fetched:
                await m.ack()
            done += len(vals)
        took = time.perf_counter() - t0
        db.close()
        await nc.close()
        return pub_s, took
    finally:
        server.proc.stop()


async def hub_rate(
    work: Path, ids: list[str], msgs: list[tuple[str, Batch]], last: int
) -> tuple[float, float, float]:
    hub = BenchHub(work / "hub", seed_devices=ids)
    try:
        cpu = CpuMeter(hub.processes())
        t0 = time.perf_counter()
        pub_s = await publish(hub.client_url, msgs, user="hub", password=hub.secret("hub_password"))
        deadline = t0 + 600
        while True:
            behind = hub.query(
                "SELECT count(*) FROM device_sync WHERE last_applied_seq < ?", (last,)
            )[0][0]
            if not behind:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{behind} devices not fully applied after 600 s")
            await asyncio.sleep(0.05)
        return pub_s, time.perf_counter() - t0, cpu.percent()
    finally:
        hub.stop()


async def run(args: argparse.Namespace, work: Path) -> None:
    ids = [f"in-{i:06d}" for i in range(args.devices)]
    msgs = batches(ids, args.rows_per_device)
    total = args.devices * args.rows_per_device
    print(f"{total} rows ({args.devices} devices x {args.rows_per_device}) in {len(msgs)} reports;"
          f" load average {loadavg()}")  # fmt: skip
    pub_raw, took_raw = await raw(work, msgs, total)
    print(f"raw:  published in {pub_raw:.2f} s; consumed+inserted in {took_raw:.2f} s:"
          f" {total / took_raw:,.0f} rows/s", flush=True)  # fmt: skip
    pub_hub, took_hub, cpu = await hub_rate(work, ids, msgs, args.rows_per_device)
    print(f"hub:  published in {pub_hub:.2f} s; all applied {took_hub:.2f} s after the first"
          f" publish: {total / took_hub:,.0f} rows/s (hub CPU {cpu:.0f} % of a core)")  # fmt: skip
    ratio = (total / took_hub) / (total / took_raw)
    print(f"hub / raw = {ratio:.0%} (goal >= 50 %); load average {loadavg()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--rows-per-device", type=int, default=500)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-bench-ingest-"))
    try:
        asyncio.run(run(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
