"""The fleet store on real SQLite files: schema, migrations, and each part's rules."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from bundles.errors import VersionConflict
from hub.errors import ConfigError, Conflict, Forbidden, NotFound, Unauthorized
from hub.store import Store
from hub.store.migrations import MIGRATIONS, applied_versions

SPEC = {"bundle": "app", "version": "1.0.0", "containers": []}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "hub.db")
    yield s
    s.close()


def test_fresh_db_is_wal_with_foreign_keys_and_every_migration_recorded(store: Store) -> None:
    assert store.scalar("PRAGMA journal_mode") == "wal"
    assert store.scalar("PRAGMA foreign_keys") == 1
    assert store.scalar("PRAGMA busy_timeout") >= 1000
    assert applied_versions(store.db) == [v for v, _, _ in MIGRATIONS]
    expected = {
        "tenants",
        "devices",
        "device_tags",
        "groups",
        "group_members",
        "bundles",
        "bundle_versions",
        "assignments",
        "rollouts",
        "rollout_targets",
        "reported_state",
        "events",
        "metrics_1m",
        "metrics_1h",
        "api_keys",
        "enrollment_tokens",
        "device_sync",
    }
    assert expected <= set(store.db.table_names())


def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    Store.open(tmp_path / "h.db").close()
    s = Store.open(tmp_path / "h.db")
    assert store_count(s, "schema_migrations") == len(MIGRATIONS)
    s.close()


def test_a_db_from_a_newer_hub_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path / "h.db").close()
    conn = sqlite3.connect(tmp_path / "h.db")
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'x')")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match="999"):
        Store.open(tmp_path / "h.db")


def store_count(s: Store, table: str) -> int:
    return int(s.scalar(f"SELECT count(*) FROM {table}"))


def test_devices_tags_groups_and_paging(store: Store) -> None:
    for i in range(25):
        store.upsert_device(
            f"dev-{i:02d}", "acme", hostname=f"host{i}", tags=["rpi"] if i % 2 else []
        )
    items, cursor = store.list_devices(limit=10)
    assert [d["id"] for d in items] == [f"dev-{i:02d}" for i in range(10)]
    seen = [d["id"] for d in items]
    while cursor:
        items, cursor = store.list_devices(limit=10, after=cursor)
        seen += [d["id"] for d in items]
    assert seen == [f"dev-{i:02d}" for i in range(25)]
    assert len(store.list_devices(tag="rpi", limit=100)[0]) == 12
    assert [d["id"] for d in store.list_devices(text="host7", limit=100)[0]] == ["dev-07"]
    assert store.list_devices(text="%", limit=100)[0] == []  # LIKE wildcards are literal

    assert store.tag_device("dev-00", "lab") is True
    assert store.tag_device("dev-00", "lab") is False
    store.create_group("east")
    with pytest.raises(Conflict):
        store.create_group("east")
    assert store.add_to_group("east", "dev-00") is True
    d = store.get_device("dev-00")
    assert d["tags"] == ["lab"] and d["groups"] == ["east"]
    assert store.list_groups()[0]["members"] == 1
    assert store.list_devices(group="east", limit=10)[0][0]["id"] == "dev-00"
    with pytest.raises(NotFound):
        store.add_to_group("east", "no-such")
    assert store.delete_group("east") == ["dev-00"]
    assert store.get_device("dev-00")["groups"] == []


def test_decommissioned_devices_are_hidden_unless_asked(store: Store) -> None:
    store.upsert_device("a", "acme")
    store.upsert_device("b", "acme")
    assert store.decommission_device("a") is True
    assert store.decommission_device("a") is False
    assert [d["id"] for d in store.list_devices()[0]] == ["b"]
    assert len(store.list_devices(include_decommissioned=True)[0]) == 2


def test_bundle_versions_are_immutable(store: Store) -> None:
    assert store.put_bundle_version("app", "1.0.0", SPEC, "sha256:a", "") is True
    assert store.put_bundle_version("app", "1.0.0", SPEC, "sha256:a", "") is False
    with pytest.raises(VersionConflict):
        store.put_bundle_version("app", "1.0.0", SPEC, "sha256:b", "")
    # Even a direct UPDATE is refused by the trigger.
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute("UPDATE bundle_versions SET content_hash = 'x'")
    store.put_bundle_version("app", "1.10.0", SPEC, "sha256:c", "")
    store.put_bundle_version("app", "1.2.0", SPEC, "sha256:d", "")
    assert [v["version"] for v in store.bundle_versions("app")] == ["1.10.0", "1.2.0", "1.0.0"]
    assert store.list_bundles()[0]["latest"] == "1.10.0"
    assert store.get_bundle_version("app")["version"] == "1.10.0"
    assert store.get_bundle_version("app", "1.0.0")["spec"] == SPEC


def test_assignments_and_resolution(store: Store) -> None:
    store.put_bundle_version("app", "1.0.0", SPEC, "sha256:a", "")
    store.put_bundle_version("app", "2.0.0", SPEC, "sha256:b", "")
    store.upsert_device("d1", "acme", tags=["rpi"])
    store.upsert_device("d2", "acme")
    store.create_group("lab")
    store.add_to_group("lab", "d2")
    store.assign("tag", "rpi", "app", "1.0.0")
    store.assign("group", "lab", "app", "2.0.0")
    got = store.resolve_desired()
    assert got["d1"] is not None and got["d1"].version == "1.0.0"
    assert got["d2"] is not None and got["d2"].version == "2.0.0"
    store.assign("device", "d1", "app", "2.0.0")
    assert store.resolve_desired(["d1"])["d1"].target_kind == "device"  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        store.assign("group", "nope", "app", "1.0.0")
    with pytest.raises(NotFound):
        store.assign("tag", "rpi", "app", "9.9.9")
    with pytest.raises(Conflict):
        store.delete_group("lab")  # assigned: unassign first
    store.unassign("group", "lab")
    assert store.resolve_desired(["d2"])["d2"] is None
    with pytest.raises(NotFound):
        store.unassign("group", "lab")


def test_api_keys_hashed_revocable_and_last_admin_protected(store: Store) -> None:
    rec, key = store.create_api_key("ops", "admin")
    assert key.startswith(f"sbk_{rec['id']}_")
    assert key not in str(store.rows("SELECT * FROM api_keys"))  # only the hash is stored
    assert store.authenticate(key)["role"] == "admin"
    for bad in (None, "", "sbk_x_y"):
        with pytest.raises(Unauthorized):
            store.authenticate(bad)
    with pytest.raises(Conflict):
        store.revoke_api_key(rec["id"])
    ro, ro_key = store.create_api_key("viewer", "readonly")
    store.revoke_api_key(ro["id"])
    with pytest.raises(Unauthorized, match="revoked"):
        store.authenticate(ro_key)


def test_enrollment_tokens_expire_and_run_out(store: Store) -> None:
    rec, token = store.create_enrollment_token("acme", 3600, 2)
    assert token not in str(store.rows("SELECT * FROM enrollment_tokens"))
    assert store.consume_enrollment_token(token) == "acme"
    assert store.consume_enrollment_token(token) == "acme"
    with pytest.raises(Forbidden, match="used up"):
        store.consume_enrollment_token(token)
    _, t2 = store.create_enrollment_token("acme", 60, 5)
    with pytest.raises(Forbidden, match="expired"):
        store.consume_enrollment_token(t2, now=time.time() + 61)
    rec3, t3 = store.create_enrollment_token("acme", 60, 5)
    store.revoke_enrollment_token(rec3["id"])
    with pytest.raises(Forbidden, match="revoked"):
        store.consume_enrollment_token(t3)
    with pytest.raises(Unauthorized):
        store.consume_enrollment_token("sbt_nope_nope")
    assert rec["uses"] == 0 and store.get_enrollment_token(rec["id"])["uses"] == 2


def test_failed_transaction_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.tx():
        store.upsert_device("d1", "acme")
        raise RuntimeError("boom")
    assert store_count(store, "devices") == 0
    assert store_count(store, "tenants") == 0


def test_events_metrics_reported_and_sync_position(store: Store) -> None:
    store.upsert_device("d1", "acme")
    for i in range(5):
        store.add_event("d1", "started", f"n{i}", {"i": i}, seq=i + 1)
    store.add_event(None, "hub", "not about a device")
    items, cursor = store.list_events(device="d1", limit=3)
    assert [e["message"] for e in items] == ["n4", "n3", "n2"]
    assert cursor is not None
    rest, cursor2 = store.list_events(device="d1", limit=3, before=int(cursor))
    assert [e["message"] for e in rest] == ["n1", "n0"] and cursor2 is None
    store.put_metrics("1m", "d1", [("cpu", 60, 1.0, 2.0, 3.0), ("cpu", 120, 1.0, 1.5, 2.0)])
    store.put_metrics("1m", "d1", [("cpu", 60, 1.0, 2.0, 3.0)])  # replay: no duplicate
    assert len(store.get_metrics("d1", "1m")) == 2
    assert len(store.get_metrics("d1", "1m", since=100)) == 1
    assert store.get_reported("d1") is None
    store.set_reported("d1", {"bundle": "app@1.0.0"}, "2026-01-01T00:00:00.000Z")
    assert store.get_reported("d1") == {
        "state": {"bundle": "app@1.0.0"},
        "as_of": "2026-01-01T00:00:00.000Z",
    }
    assert store.last_applied_seq("d1") == 0
    store.set_last_applied_seq("d1", 42)
    assert store.last_applied_seq("d1") == 42
