"""The ingest's per-fetch batching: rows of many devices and kinds in one fetch land exactly
as row-by-row writes would (events in arrival order, the last write of a minute wins, hours
recomputed), with the store's foreign keys back on afterwards; and the cached timestamp
formatting equals ``now_iso``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.store import Store, migrations
from hub.sync.apply import Applier, Fetched
from hub.sync.rows import iso
from hub.timeutil import now_iso
from protocol.report import ReportBatch, ReportRow
from protocol.subjects import report


@given(st.floats(min_value=0, max_value=2**34, allow_nan=False))
def test_cached_iso_matches_now_iso(ts: float) -> None:
    assert iso(ts) == now_iso(ts)


def _event(seq: int, n: int) -> ReportRow:
    p = {"seq": n, "kind": "t", "severity": "info", "message": f"m{n}", "data": None, "ts": 5.0}
    return ReportRow(seq, "event", 5.0, p)


def _minute(seq: int, bucket: int, value: float) -> ReportRow:
    return ReportRow(seq, "metrics.1m", 5.0, {"bucket": bucket, "metrics": {"cpu": [value] * 4}})


def test_one_fetch_of_interleaved_devices_applies_like_row_by_row() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "hub.db")
        for d in ("a", "b"):
            store.upsert_device(d, "acme")
        a1 = ReportBatch("a", (_event(1, 1), _minute(2, 3600, 1.0)), prev_seq=0)
        b1 = ReportBatch("b", (_minute(1, 3600, 7.0), _event(2, 1)), prev_seq=0)
        # The same minute again, later in the fetch: its values win.
        a2 = ReportBatch("a", (_minute(3, 3600, 3.0), _event(4, 2)), prev_seq=2)
        msgs = [Fetched(report(b.device_id), b.to_json(), b.msg_id, 1) for b in (a1, b1, a2)]
        out = Applier().apply_fetch(store, msgs)
        assert out.actions == ["ack", "ack", "ack"]
        events = store.conn.execute(
            "SELECT device_id, seq FROM events WHERE kind = 't' ORDER BY id"
        ).fetchall()
        assert events == [("a", 1), ("b", 1), ("a", 2)]
        assert store.get_metrics("a", "1m") == [
            {"name": "cpu", "ts": 3600, "min": 3.0, "avg": 3.0, "max": 3.0}
        ]
        assert store.get_metrics("a", "1h")[0]["avg"] == 3.0
        assert store.get_metrics("b", "1h")[0]["avg"] == 7.0
        assert store.last_applied_seq("a") == 4
        assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_metric_tables_have_no_rowid() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "hub.db")
        for table in ("metrics_1m", "metrics_1h"):
            sql = store.conn.execute(
                "SELECT sql FROM sqlite_master WHERE name = ?", (table,)
            ).fetchone()[0]
            assert "WITHOUT ROWID" in sql


def test_migration_4_keeps_the_rollups(monkeypatch: pytest.MonkeyPatch) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hub.db"
        with monkeypatch.context() as m:
            m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
            old = Store.open(path)
        old.upsert_device("a", "acme")
        old.put_metrics("1m", "a", [("cpu", 60, 1.0, 2.0, 3.0)])
        old.put_metrics("1h", "a", [("cpu", 0, 1.0, 2.0, 3.0)])
        old.close()
        store = Store.open(path)
        assert store.get_metrics("a", "1m") == [
            {"name": "cpu", "ts": 60, "min": 1.0, "avg": 2.0, "max": 3.0}
        ]
        assert len(store.get_metrics("a", "1h")) == 1
        store.conn.execute("DELETE FROM devices WHERE id = 'a'")
        assert store.get_metrics("a", "1m") == []  # the cascade survived the rebuild
