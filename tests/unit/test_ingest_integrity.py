"""Pure parts of the report path's integrity fixes: the stuck-ingest clock, the agent
store's epoch, packing with an epoch and without a message id."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.store import Store
from agent.sync.batching import pack
from hub.sync.ingest import Stuck
from protocol.report import decode_report


def test_stuck_needs_repeated_failures_over_time() -> None:
    s = Stuck(after=15)
    assert s.reason(0) is None
    s.failed(0, "OperationalError('database or disk is full')")
    assert s.reason(100) is None  # one failure is not stuck
    s.failed(5, "OperationalError('database or disk is full')")
    assert s.reason(10) is None  # not for long enough yet
    why = s.reason(20)
    assert why is not None and "2 fetches" in why and "disk is full" in why
    s.ok()
    assert s.reason(1000) is None


def test_a_new_store_has_an_epoch_and_a_made_again_store_another(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    s = Store.open(path, device_id="dev-1")
    first = s.outbox_epoch()
    assert first and len(first) >= 16
    s.event("k", "one")
    s.close()
    s = Store.open(path, device_id="dev-1")
    assert s.outbox_epoch() == first  # fixed for the store's life
    s.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    s = Store.open(path, device_id="dev-1")
    assert s.outbox_epoch() not in (None, first)
    s.event("k", "again")
    assert s.outbox_pending(10)[0].seq == 1  # numbering from 1, under the new epoch
    s.close()


def test_a_store_from_an_older_agent_keeps_no_epoch(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    Store.open(path, device_id="dev-1").close()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM identity WHERE key = 'sync_epoch'")
    s = Store.open(path, device_id="dev-1")
    assert s.outbox_epoch() is None
    s.close()


def test_outbox_stats_is_one_snapshot(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "agent.db", device_id="dev-1")
    s.event("k", "x")
    st = s.outbox_stats()
    assert (st["pending"], st["last_seq"]) == (1, 1)
    s.outbox_mark_sent(1)
    st = s.outbox_stats()
    assert (st["pending"], st["last_seq"]) == (0, 1)
    s.close()


def test_packed_batches_carry_the_epoch() -> None:
    rows = [(i, "event", 1.0, '{"i":1}') for i in range(1, 30)]
    batches = pack("dev-1", rows, max_bytes=400, epoch="e1")
    assert len(batches) > 1
    for b in batches:
        assert len(b.body) <= 400
        assert decode_report(b.body).epoch == "e1"
    assert decode_report(pack("dev-1", rows)[0].body).epoch is None
