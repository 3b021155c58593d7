"""Agent store on real SQLite files (tmp_path): migrations, outbox atomicity, sequences,
desired-state rules, retention, outbox bounds and corruption recovery."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from agent.errors import ConfigError, StoreCorrupt, StoreError
from agent.metrics.folding import roll_up
from agent.precedence import Revision, revision_of
from agent.reconcile.ports import Recorder
from agent.store import Store, events
from protocol.desired import DesiredState


def spec(version: str = "1.0") -> dict:
    return {"bundle": "hello", "version": version, "containers": []}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "agent.db", device_id="dev-1")
    yield s
    s.close()


def raw(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_open_creates_wal_db_with_recorded_migrations(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "agent.db"
    Store.open(path, device_id="dev-1").close()
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]
    assert [r[0] for r in raw(path, "SELECT version FROM schema_migrations")] == [1, 2, 3, 4]
    # Reopening applies nothing twice.
    Store.open(path, device_id="dev-1").close()
    assert len(raw(path, "SELECT * FROM schema_migrations")) == 4


def test_store_satisfies_recorder_protocol(store: Store) -> None:
    rec: Recorder = store  # mypy checks the structural match; this checks it at runtime
    assert rec.event("x", "y") == 1


def test_device_id_mismatch_is_refused_unless_adopting(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    Store.open(path, device_id="dev-1").close()
    with pytest.raises(ConfigError) as ei:
        Store.open(path, device_id="dev-2")
    assert ei.value.field == "device_id"
    s = Store.open(path, device_id="other", adopt_stored_id=True)
    assert s.device_id == "dev-1"
    s.close()


def test_must_exist(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no agent store"):
        Store.open(tmp_path / "nope.db", must_exist=True)


def test_event_and_outbox_row_commit_together(store: Store) -> None:
    seq = store.event("container.started", "web started", data={"name": "web"})
    [ev] = store.events(after_seq=0)
    assert (ev.seq, ev.kind, ev.data) == (seq, "container.started", {"name": "web"})
    [row] = store.outbox_pending(10, 10_000)
    assert row.kind == "event" and row.payload["seq"] == seq
    assert row.payload["message"] == "web started"


async def test_write_is_one_transaction_on_the_store_thread(store: Store) -> None:
    """The thread rule: ``write`` runs on the store's worker, not the loop's thread, and
    every store write inside it commits together or not at all."""
    loop_thread = threading.current_thread()
    seen: list[threading.Thread] = []

    def two_then_fail(s: Store) -> None:
        seen.append(threading.current_thread())
        s.event("a", "first")
        s.put_desired(DesiredState(3, None))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await store.write(two_then_fail)
    assert seen and seen[0] is not loop_thread
    assert await store.read(Store.events, 0) == []
    assert await store.read(Store.current_desired) is None
    assert await store.read(Store.outbox_depth) == 0
    # Calls queue on the one worker in the order they were made.
    seqs = await asyncio.gather(*(store.write(Store.event, "k", f"m{i}") for i in range(20)))
    assert seqs == list(range(1, 21))
    assert await store.read(lambda s: threading.current_thread()) is seen[0]


def test_failed_transaction_leaves_neither_event_nor_outbox(store: Store) -> None:
    def fail(c: sqlite3.Connection) -> None:
        events.append(c, "k", "m", "info", None, 1.0)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.write_now(fail)
    assert store.events(after_seq=0) == []
    assert store.outbox_depth() == 0
    # The rolled-back numbers are handed out again: sequences stay gapless.
    assert store.event("k", "m") == 1


def test_bad_severity_is_refused(store: Store) -> None:
    with pytest.raises(StoreError):
        store.event("k", "m", severity="loud")  # type: ignore[arg-type]


def test_sequences_survive_sent_row_deletion_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    s = Store.open(path, device_id="dev-1")
    for i in range(5):
        s.event("k", f"m{i}")
    s.outbox_mark_sent(5)
    s.prune(raw=1, minute=1, hour=1, outbox_max_bytes=10**6, outbox_max_age=10**6, now=10**11)
    assert raw(path, "SELECT count(*) FROM outbox") == [(0,)]
    s.close()
    s = Store.open(path, device_id="dev-1")
    assert s.event("k", "again") == 6
    [row] = s.outbox_pending(10, 10_000)
    assert row.seq == 6
    s.close()


def test_events_paging_and_tail(store: Store) -> None:
    for i in range(10):
        store.event("k", f"m{i}")
    assert [e.seq for e in store.events(after_seq=3, limit=4)] == [4, 5, 6, 7]
    assert [e.seq for e in store.events(limit=3)] == [8, 9, 10]
    assert store.last_event_seq() == 10


def test_outbox_pending_limits_rows_and_bytes(store: Store) -> None:
    for i in range(10):
        store.event("k", "x" * 100 + str(i))
    rows = store.outbox_pending(limit=4, max_bytes=10**6)
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    # Rows differ by a byte or two (timestamps); the budget is exactly the first three.
    three = sum(r.size for r in rows[:3])
    assert len(store.outbox_pending(limit=100, max_bytes=three)) == 3
    assert len(store.outbox_pending(limit=100, max_bytes=three - 1)) == 2
    # A single oversized row is still returned alone rather than blocking the queue.
    assert len(store.outbox_pending(limit=100, max_bytes=1)) == 1
    assert store.outbox_mark_sent(4) == 4
    assert store.outbox_depth() == 6
    assert store.outbox_pending(1, 10**6)[0].seq == 5
    assert store.outbox_mark_sent(4) == 0


def test_put_desired_is_idempotent_and_emits_change(store: Store) -> None:
    d = DesiredState(3, spec(), rollout_id="r1", content_hash="h1")
    assert store.put_desired(d) is True
    assert store.put_desired(d) is False
    assert store.current_desired() == d
    kinds = [r.kind for r in store.outbox_pending(100, 10**6)]
    assert kinds == ["desired", "event"]
    assert [e.kind for e in store.events()] == ["desired.changed"]


def test_highest_hub_generation_wins_even_if_received_late(store: Store) -> None:
    store.put_desired(DesiredState(5, spec("2.0")))
    store.put_desired(DesiredState(4, spec("1.0")))
    cur = store.current_desired()
    assert cur is not None and cur.generation == 5


def test_local_override_until_next_hub_generation(store: Store) -> None:
    store.put_desired(DesiredState(5, spec("1.0")))
    local = store.put_local_desired(spec("9.9"), actor="tech:alice")
    assert local.source == "local" and local.generation == 6
    assert store.current_desired() == local
    payload = [r.payload for r in store.outbox_pending(100, 10**6) if r.kind == "desired"][-1]
    assert payload["spec"] == spec("9.9") and payload["actor"] == "tech:alice"
    # A replay of an older hub generation does not clear the override ...
    store.put_desired(DesiredState(5, spec("1.0")))
    store.put_desired(DesiredState(2, spec("0.1")))
    assert store.current_desired() == local
    # ... the next hub generation does, and says so.
    store.put_desired(DesiredState(7, spec("2.0")))
    cur = store.current_desired()
    assert cur is not None and (cur.source, cur.generation) == ("hub", 7)
    assert "desired.local_cleared" in [e.kind for e in store.events()]


def test_clear_local_desired(store: Store) -> None:
    assert store.clear_local_desired() is False
    store.put_desired(DesiredState(1, spec("1.0")))
    store.put_local_desired(spec("2.0"))
    assert store.clear_local_desired(actor="http:bob") is True
    cur = store.current_desired()
    assert cur is not None and cur.source == "hub"
    assert [r.cleared_at is not None for r in store.desired_revisions() if r.source == "local"]


def hub(gen: int, version: str = "1.0") -> Revision:
    return revision_of(DesiredState(gen, spec(version)))


def test_local_generation_is_above_deployments_too(store: Store) -> None:
    store.deployment_begin(hub(40), "hello@1.0", spec())
    assert store.put_local_desired(None).generation == 41


def test_deployments(store: Store) -> None:
    assert store.deployment(hub(1)) is None
    store.deployment_begin(hub(1), "hello@1.0", spec())
    store.deployment_set(hub(1), "healthy", None)
    store.deployment_begin(hub(2, "2.0"), "hello@2.0", spec("2.0"))
    store.deployment_set(hub(2, "2.0"), "failed", "unhealthy after 60s")
    d2 = store.deployment(hub(2, "2.0"))
    assert d2 is not None and d2.status == "failed" and d2.finished_at is not None
    assert d2.spec == spec("2.0") and d2.revision == hub(2, "2.0")
    last = store.last_healthy_deployment()
    assert last is not None and last.generation == 1
    assert store.last_healthy_deployment(other_than=hub(1)) is None
    latest = store.latest_deployment()
    assert latest is not None and latest.generation == 2
    with pytest.raises(StoreError):
        store.deployment_set(hub(99), "healthy", None)
    rows = [r.payload for r in store.outbox_pending(100, 10**6) if r.kind == "deployment"]
    assert len(rows) == 4
    assert rows[-1]["source"] == "hub" and rows[-1]["spec_hash"] == hub(2, "2.0").spec_hash


def test_a_deployment_belongs_to_one_exact_revision(store: Store) -> None:
    """A local override and the hub revision that took the same generation are two
    deployments: neither is ever found, updated or reported as the other."""
    local = store.put_local_desired(spec("9.9"))
    lrev = revision_of(local)
    store.deployment_begin(lrev, "hello@9.9", spec("9.9"))
    store.deployment_set(lrev, "healthy", None)
    same_number = hub(local.generation, "2.0")
    assert store.deployment(same_number) is None
    # Even the same spec from the hub under that number is another revision.
    assert store.deployment(revision_of(DesiredState(local.generation, spec("9.9")))) is None
    store.deployment_begin(same_number, "hello@2.0", spec("2.0"))
    store.deployment_set(same_number, "rolled_back", "unhealthy")
    got_local = store.deployment(lrev)
    assert got_local is not None and got_local.status == "healthy"
    latest = store.latest_deployment()
    assert latest is not None and latest.revision == same_number
    # The rollback target is the newest healthy write, whatever its generation.
    target = store.last_healthy_deployment(other_than=same_number)
    assert target is not None and target.revision == lrev


def test_the_latest_deployment_is_the_latest_write(store: Store) -> None:
    store.deployment_begin(hub(1), "hello@1.0", spec())
    store.deployment_set(hub(1), "healthy", None)
    store.deployment_begin(hub(2, "2.0"), "hello@2.0", spec("2.0"))
    store.deployment_set(hub(2, "2.0"), "rolled_back", "crash-looping")
    store.deployment_set(hub(1), "healthy", None)  # the rollback target, healthy again
    latest = store.latest_deployment()
    assert latest is not None and latest.generation == 1
    assert store.status_summary()["deployment"]["generation"] == 1


def test_migration_2_keys_old_deployments_by_revision(tmp_path: Path) -> None:
    """A store written before deployments carried their revision: each old row gets the
    source whose revision it ran and its spec hash."""
    path = tmp_path / "agent.db"
    s = Store.open(path, device_id="dev-1")
    s.put_desired(DesiredState(3, spec("1.0")))
    local = s.put_local_desired(spec("9.9"))
    s.close()
    conn = sqlite3.connect(path)
    conn.executescript(
        "DROP INDEX deployments_revision; DROP INDEX deployments_seq;"
        "ALTER TABLE deployments DROP COLUMN source; ALTER TABLE deployments DROP COLUMN seq;"
        "ALTER TABLE deployments DROP COLUMN spec_hash;"
        "DROP TABLE update_locks; ALTER TABLE desired_revisions DROP COLUMN maintenance_windows;"
        "ALTER TABLE desired_revisions DROP COLUMN force;"
        "ALTER TABLE desired_revisions DROP COLUMN variables;"
        "ALTER TABLE desired_revisions DROP COLUMN secrets;"
        "DELETE FROM schema_migrations WHERE version >= 2;"
    )
    for gen, sp in ((3, spec("1.0")), (local.generation, spec("9.9"))):
        conn.execute(
            "INSERT INTO deployments (generation, bundle_ref, spec, status, started_at)"
            " VALUES (?, 'x', ?, 'healthy', 1.0)",
            (gen, json.dumps(sp, sort_keys=True, separators=(",", ":"))),
        )
    conn.commit()
    conn.close()
    s = Store.open(path, device_id="dev-1")
    try:
        assert s.deployment(hub(3)) is not None
        old_local = s.deployment(revision_of(local))
        assert old_local is not None and old_local.source == "local"
        latest = s.latest_deployment()
        assert latest is not None and latest.source == "local"
    finally:
        s.close()


def test_save_observed_writes_outbox_only_on_change(store: Store) -> None:
    a = [{"name": "web", "state": "running"}, {"name": "db", "state": "running"}]
    store.save_observed(a)
    store.save_observed(list(reversed(a)))
    assert store.outbox_depth() == 1
    assert [c["name"] for c in store.observed()] == ["db", "web"]
    store.save_observed([{"name": "web", "state": "exited"}])
    assert store.outbox_depth() == 2
    assert store.observed() == [{"name": "web", "state": "exited"}]


def test_journal(store: Store) -> None:
    run = store.journal_begin(3, "timer", [{"op": "pull"}])
    store.journal_step(run, 0, {"op": "pull"}, "started")
    store.journal_step(run, 0, {"op": "pull"}, "done")
    store.journal_end(run, "succeeded", None)
    noop = store.journal_begin(3, "timer", [])
    store.journal_end(noop, "noop", "up to date")
    runs = store.journal(limit=5)
    assert [r.id for r in runs] == [noop, run]
    assert [s.status for s in runs[1].steps] == ["started", "done"]
    # Only the run that did something travels upstream.
    assert [r.kind for r in store.outbox_pending(100, 10**6)] == ["reconcile"]
    with pytest.raises(StoreError):
        store.journal_end(999, "failed", "x")


def test_rollup_writes_minutes_with_outbox_and_hours(store: Store) -> None:
    base = 7200  # an hour boundary
    for t in range(0, 3600, 10):
        store.record_samples(base + t, {"cpu": float(t % 60), "mem": 1.0})
    assert roll_up(store, base + 3600) == 60
    minutes = store.metrics("1m", metric="cpu")
    assert len(minutes) == 60
    assert (minutes[0].min, minutes[0].max, minutes[0].avg, minutes[0].count) == (0, 50, 25, 6)
    assert [r.kind for r in store.outbox_pending(1000, 10**7)].count("metrics.1m") == 60
    [hour] = store.metrics("1h", metric="cpu")
    assert (hour.ts, hour.count, hour.avg) == (base, 360, 25)
    # Calling again folds nothing twice.
    assert roll_up(store, base + 3600) == 0
    assert store.metrics("1h", metric="cpu")[0].count == 360


def test_rollup_merges_late_partial_bucket(store: Store) -> None:
    store.record_samples(120, {"cpu": 10.0})
    roll_up(store, 190)
    store.record_samples(200, {"cpu": 30.0})
    roll_up(store, 250)
    pts = store.metrics("1m", metric="cpu")
    assert [(p.ts, p.avg, p.count) for p in pts] == [(120, 10.0, 1), (180, 30.0, 1)]


def test_metrics_raw_and_range(store: Store) -> None:
    for t in range(5):
        store.record_samples(100 + t, {"a": t})
    pts = store.metrics("raw", since=101, until=104)
    assert [p.ts for p in pts] == [101, 102, 103]
    assert store.latest_samples() == {"a": 4.0}
    with pytest.raises(StoreError):
        store.metrics("5m")  # type: ignore[arg-type]


def test_prune_applies_retention(store: Store) -> None:
    now = 10 * 86400
    store.record_samples(now - 7200, {"a": 1})
    store.record_samples(now - 10, {"a": 2})
    roll_up(store, now - 3600)
    out = store.prune(
        raw=3600, minute=1800, hour=86400, outbox_max_bytes=10**6, outbox_max_age=10**6, now=now
    )
    assert out["raw"] == 1 and out["1m"] == 1
    assert [p.value if hasattr(p, "value") else p.avg for p in store.metrics("raw")] == [2.0]


def test_outbox_bounds_drop_rollups_first_and_announce_it(store: Store) -> None:
    for i in range(20):
        store.record_samples(60 * i, {"cpu": float(i)})
    roll_up(store, 60 * 20)
    store.event("important", "keep me")
    before = store.outbox_stats()
    dropped = store.enforce_outbox_bounds(max_bytes=before["bytes"] // 2, max_age=10**9)
    assert dropped > 0
    rows = store.outbox_pending(1000, 10**7)
    kinds = [r.kind for r in rows]
    assert kinds.count("metrics.1m") == 20 - dropped
    payloads = [r.payload for r in rows if r.kind == "event"]
    assert any(p["kind"] == "important" for p in payloads)
    note = [p for p in payloads if p["kind"] == "outbox.dropped"]
    assert note and note[0]["data"]["count"] == dropped
    assert note[0]["data"]["ranges"][0][0] == 1  # oldest rollups went first


def test_outbox_age_bound_drops_old_rollups_keeps_events(store: Store) -> None:
    store.record_samples(0, {"cpu": 1.0})
    roll_up(store, 60)
    store.event("old", "old event")
    assert store.enforce_outbox_bounds(max_bytes=10**9, max_age=10, now=10**11) == 1
    kinds = [(r.kind, r.payload.get("kind")) for r in store.outbox_pending(10, 10**6)]
    assert kinds == [("event", "old"), ("event", "outbox.dropped")]
    note = store.events()[-1]
    assert note.severity == "warning" and note.data is not None
    assert note.data["kinds"] == {"metrics.1m": 1}


def test_outbox_size_bound_drops_events_last_and_says_so(store: Store) -> None:
    for i in range(10):
        store.event("e", "x" * 500 + str(i))
    assert store.enforce_outbox_bounds(max_bytes=3000, max_age=10**9) > 0
    note = store.events()[-1]
    assert note.kind == "outbox.dropped" and note.severity == "error"
    # The event log itself keeps every event: only the upstream copies were dropped.
    assert len([e for e in store.events(limit=100) if e.kind == "e"]) == 10
    assert store.outbox_stats()["bytes"] <= 3000 + 1000  # plus the announcing event


def test_status_summary(store: Store) -> None:
    store.put_desired(DesiredState(2, spec()))
    store.save_observed([{"name": "web", "state": "running", "health": "healthy", "x": 1}])
    s = store.status_summary()
    assert s["device_id"] == "dev-1"
    assert s["desired"]["bundle_ref"] == "hello@1.0"
    assert s["containers"] == [{"name": "web", "state": "running", "health": "healthy"}]
    assert s["outbox"]["pending"] == 3


def test_data_version_changes_on_other_connection_commit(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    a = Store.open(path, device_id="dev-1")
    b = Store.open(path, device_id="dev-1")
    v = a.data_version()
    b.put_local_desired(spec())
    assert a.data_version() != v
    cur = a.current_desired()
    assert cur is not None and cur.source == "local"
    a.close()
    b.close()


@pytest.mark.parametrize("garbage", [b"this is not a database at all" * 100, b"\0" * 5000])
def test_corrupt_file_is_moved_aside_and_recorded(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "agent.db"
    path.write_bytes(garbage)
    with pytest.raises(StoreCorrupt):
        Store.open(path, device_id="dev-1", recover=False)
    assert path.read_bytes() == garbage  # without recover nothing is touched
    s = Store.open(path, device_id="dev-1")
    moved = list(tmp_path.glob("agent.db.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes() == garbage
    ev, salvage = s.events()
    assert ev.kind == "store.corrupt" and ev.severity == "error"
    assert salvage.kind == "store.salvage" and s.current_desired() is None
    assert ev.data is not None and ev.data["moved_to"] == str(moved[0])
    # The new numbering starts far above anything the old file can have used.
    assert ev.seq > 10**12
    assert s.outbox_pending(10, 10**6)[0].seq > 10**12
    s.close()


def test_damaged_pages_are_detected_and_desired_state_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    s = Store.open(path, device_id="dev-1")
    s.put_desired(DesiredState(9, spec("3.0"), rollout_id="r9"))
    local = s.put_local_desired(spec("3.1"))
    for i in range(300):
        s.event("k", "x" * 200 + str(i))
    s.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    # Scribble over the middle of the file (table b-tree pages), keeping the header valid.
    mid = len(data) // 2
    data[mid : mid + 8192] = b"\xff" * 8192
    path.write_bytes(bytes(data))
    s = Store.open(path, device_id="dev-1")
    kinds = [e.kind for e in s.events()]
    assert "store.corrupt" in kinds and kinds[-1] == "store.salvage"
    assert list(tmp_path.glob("agent.db.corrupt-*"))
    assert s.current_desired() == local
    hub = [r for r in s.desired_revisions() if r.source == "hub"]
    assert [(r.generation, r.rollout_id) for r in hub] == [(9, "r9")]
    s.close()


def test_full_disk_is_reported_plainly_and_loses_nothing(store: Store) -> None:
    store.event("before", "kept")
    # SQLite's page cap stands in for a full disk: the next growth fails with SQLITE_FULL.
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreError, match="disk full"):
        for i in range(10_000):
            store.event("filler", "x" * 1000 + str(i))
    store._conn.execute("PRAGMA max_page_count = 1073741823")
    events = store.events(after_seq=0, limit=100_000)
    seqs = [e.seq for e in events]
    assert events[0].kind == "before"
    assert seqs == list(range(1, len(seqs) + 1))
    assert [r.seq for r in store.outbox_pending(100_000, 10**9)] == seqs


def test_killed_right_after_moving_aside_still_numbers_high(tmp_path: Path) -> None:
    # The agent died after renaming the bad file but before the fresh store was set up.
    (tmp_path / "agent.db.corrupt-20260101T000000Z").write_bytes(b"junk")
    s = Store.open(tmp_path / "agent.db", device_id="dev-1")
    assert s.event("k", "m") > 10**12
    s.close()
