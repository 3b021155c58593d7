"""Retention against a real hub (nats-server and litestream children, the DB a WAL file):
the timer-driven first pass removes exactly the expired rows, the counters on /metrics move,
and the deletes reach the litestream replica."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import time
from pathlib import Path

import aiohttp

from hub import litestream
from hub.app import Hub
from hub.children import find_binary
from hub.config import DataDir, HubConfig, Secrets, save
from hub.store import Store
from hub.timeutil import now_iso
from tests.harness.ports import free_port

HOUR = 3600
DAY = 24 * HOUR


def minutes_seeded(now: float) -> list[int]:
    """3 days of minute rows, one every 10 minutes: those past 48 h expire."""
    minute = int(now // 60 * 60)
    return [minute - k * 600 for k in range(3 * 144)]


def hours_seeded(now: float) -> list[int]:
    """An hourly row a day for 100 days: those past 90 days expire."""
    hour = int(now // HOUR * HOUR)
    return [hour - k * DAY for k in range(100)]


def _seed(store: Store, now: float) -> None:
    for device in ("dev-a", "dev-q", "dev-z"):
        store.upsert_device(device, "t")
    store.decommission_device("dev-z")
    for device in ("dev-a", "dev-z"):
        store.put_metric_rows(
            "1m", [(device, "cpu", t, 1.0, 2.0, 3.0) for t in minutes_seeded(now)]
        )
        store.put_metric_rows("1h", [(device, "cpu", t, 1.0, 2.0, 3.0) for t in hours_seeded(now)])
    # 40 daily events (message = age in days), oldest first as they would have arrived, for
    # dev-a, dev-z and the hub itself; dev-q is quiet: 10 events, all 40+ days old, of which
    # keep=5 (the newest by id, the Events tab's order) survive.
    rows = [
        (device, now_iso(now - k * DAY), "k", f"{k}", "{}", None, "info")
        for device in ("dev-a", "dev-z", None)
        for k in range(39, -1, -1)
    ]
    rows += [
        ("dev-q", now_iso(now - k * DAY), "k", f"{k}", "{}", None, "info")
        for k in range(49, 39, -1)
    ]
    store.add_events(rows)


async def _scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        return await resp.text()


def _counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("metrics_1m", "metrics_1h", "events")
        }
    finally:
        conn.close()


async def test_a_pass_prunes_exactly_the_expired_rows_and_replicates(tmp_path: Path) -> None:
    cfg = HubConfig(
        client_port=free_port(),
        leafnode_port=free_port(),
        monitor_port=free_port(),
        http_port=free_port(),
        host="127.0.0.1",
        http_host="127.0.0.1",
        retention_events_keep=5,
    )
    data = DataDir(tmp_path / "data")
    sec = Secrets.generate()
    save(data, cfg, sec)
    now = time.time()
    seeded = Store.open(data.db)
    _seed(seeded, now)
    seeded.close()

    hub = Hub(data, cfg, sec)
    hub.retention.first_delay = 0.1  # the production delay is 30 s; the timer path is the same
    await hub.start()
    try:
        for _ in range(300):  # bounded wait for the first pass
            if hub.retention.passes:
                break
            await asyncio.sleep(0.1)
        assert hub.retention.passes >= 1
        assert hub.store is not None
        store = hub.store
        # Cut-offs of a pass at `now` or a few seconds later: whole hours, so the same ones.
        cut_1m = int((now - 48 * HOUR) // HOUR * HOUR)
        cut_1h = int((now - 90 * DAY) // HOUR * HOUR)
        expected = {
            "metrics_1m": {t for t in minutes_seeded(now) if t >= cut_1m},
            "metrics_1h": {t for t in hours_seeded(now) if t >= cut_1h},
        }
        assert 0 < len(expected["metrics_1m"]) < len(minutes_seeded(now))
        assert 0 < len(expected["metrics_1h"]) < len(hours_seeded(now))
        for table, want in expected.items():
            for device in ("dev-a", "dev-z"):  # decommissioned: the same windows
                got = await hub.call(
                    store.rows, f"SELECT ts FROM {table} WHERE device_id = ?", (device,)
                )
                assert {r["ts"] for r in got} == want, (table, device)

        kept = await hub.call(store.rows, "SELECT device_id, message FROM events WHERE kind = 'k'")
        by_device: dict[str | None, set[int]] = {}
        for r in kept:
            by_device.setdefault(r["device_id"], set()).add(int(r["message"]))
        # Day 30 sits just past the cut-off (the pass ran after `now`) and goes. dev-a, dev-z
        # and the hub have 30 events inside the window, more than keep=5: age alone decides.
        within = set(range(30))
        assert by_device == {
            "dev-a": within,
            "dev-z": within,
            None: within,
            "dev-q": {40, 41, 42, 43, 44},
        }

        text = await _scrape(cfg.http_port)
        assert 'signalbeam_retention_passes_total{result="ok"} 1.0' in text
        for table, want in expected.items():
            seeded_n = len(minutes_seeded(now) if table == "metrics_1m" else hours_seeded(now))
            n = 2 * (seeded_n - len(want))
            assert f'signalbeam_retention_deleted_rows_total{{table="{table}"}} {n}.0' in text
        assert 'signalbeam_retention_deleted_rows_total{table="events"} 35.0' in text

        # A second pass, now with litestream surely running, after more expired rows arrived.
        await hub.call(
            store.put_metric_rows,
            "1m",
            [("dev-a", "mem", int(now) - 5 * DAY - k * 60, 1.0, 1.0, 1.0) for k in range(50)],
        )
        result = await hub.retention.run_pass()
        assert result.deleted == {"metrics_1m": 50, "metrics_1h": 0, "events": 0}
        # litestream replicates the deletes like any write: a restore catches up with them.
        await asyncio.to_thread(_wait_replicated, data, cfg, tmp_path / "probe.db")
    finally:
        await hub.stop()


def _wait_replicated(data: DataDir, cfg: HubConfig, probe: Path) -> None:
    """Poll a scratch restore until its counts equal the live DB's (bounded)."""
    binary = find_binary("litestream", cfg.litestream_bin)
    want: dict[str, int] = {}
    got: dict[str, int] = {}
    for _ in range(60):
        want = _counts(data.db)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{probe}{suffix}").unlink(missing_ok=True)
        done = subprocess.run(
            litestream.restore_argv(binary, data.replica_url(cfg), probe),
            capture_output=True,
            timeout=60,
            check=False,
        )
        if done.returncode == 0:
            got = _counts(probe)
            if got == want:
                return
        time.sleep(0.5)
    raise AssertionError(f"replica never caught up: {got} != {want}")
