"""Update gates at the hub, on a real SQLite file: maintenance windows per device or group
(validated with the field named), their resolution into each device's desired document,
the counted override, and the device's deferral shown in devices.get and the summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hub.desired import Membership
from hub.gates import forced, windows_for
from hub.store import Store
from hub.sync.desired_kv import resolve_documents
from protocol.desired import DesiredState
from tests.unit.test_hub_dispatch import Env, code, spec


@pytest.fixture
def env(tmp_path: Path) -> Env:
    store = Store.open(tmp_path / "hub.db")
    e = Env(store)
    e.call("bundles.push", {"spec": spec("1.3.0")})
    e.call("groups.create", {"name": "lab"})
    e.call("groups.add", {"name": "lab", "device": "dev-0"})
    e.call("groups.add", {"name": "lab", "device": "dev-1"})
    e.call("assign", {"target": "group:lab", "bundle": "warehouse-monitor@1.3.0"})
    yield e
    store.close()


def doc(store: Store, device: str) -> DesiredState:
    return DesiredState.from_json(resolve_documents(store, [device])[device].doc)


@pytest.mark.parametrize(
    ("windows", "field"),
    [
        (["Sox 02:00-03:00"], "windows[0].days"),
        (["Sat 02:00-05:00", "Sat 25:00-05:00"], "windows[1].start"),
        (["Sat 02:00-24:30"], "windows[0].end"),
        ("Sat 02:00-05:00", "windows"),
    ],
)
def test_bad_windows_name_the_window_and_field(env: Env, windows: Any, field: str) -> None:
    body = env.call("maintenance.set", {"target": "group:lab", "windows": windows})
    assert code(body) == "invalid" and body["error"]["field"] == field, body
    assert env.call("maintenance.list")["items"] == []


def test_windows_resolve_device_over_groups_into_the_document(env: Env) -> None:
    before = resolve_documents(env.store, ["dev-0"])["dev-0"].doc
    assert doc(env.store, "dev-0").maintenance_windows is None
    assert b"maintenance_windows" not in before  # documents without gates keep their bytes

    r = env.call("maintenance.set", {"target": "group:lab", "windows": ["Sat,Sun 02:00-05:00"]})
    assert r["changed"] is True and r["devices"] == ["dev-0", "dev-1"]
    assert doc(env.store, "dev-1").maintenance_windows == ("Sat,Sun 02:00-05:00",)
    env.call("maintenance.set", {"target": "device:dev-1", "windows": []})  # any time
    assert doc(env.store, "dev-1").maintenance_windows == ()
    assert doc(env.store, "dev-0").maintenance_windows == ("Sat,Sun 02:00-05:00",)
    env.call("maintenance.set", {"target": "group:lab", "clear": True})
    assert doc(env.store, "dev-0").maintenance_windows is None
    assert resolve_documents(env.store, ["dev-0"])["dev-0"].doc == before
    assert code(env.call("maintenance.set", {"target": "tag:x", "windows": []})) == "invalid"
    assert code(env.call("maintenance.set", {"target": "group:nope", "windows": []})) == (
        "not_found"
    )
    assert code(env.call("maintenance.set", {"target": "group:lab"})) == "invalid"
    assert code(env.call("maintenance.set", {"target": "group:lab", "windows": []}, "ro")) == (
        "forbidden"
    )


def test_windows_for_unions_groups() -> None:
    m = Membership("d", frozenset({"a", "b"}))
    assert windows_for(m, {}, {"a": ["* 01:00-02:00"], "b": ["Sat 03:00-04:00"]}) == (
        "* 01:00-02:00",
        "Sat 03:00-04:00",
    )
    assert windows_for(m, {"d": []}, {"a": ["* 01:00-02:00"]}) == ()
    assert windows_for(m, {}, {}) is None
    assert forced("b@1", "b@1") and not forced("b@1", "b@2") and not forced(None, None)


def test_force_update_needs_the_device_count_and_holds_for_that_version(env: Env) -> None:
    wrong = env.call("devices.force_update", {"ids": ["dev-0", "dev-1"], "confirm": 1})
    assert code(wrong) == "invalid" and wrong["error"]["field"] == "confirm"
    assert "number of devices (2)" in wrong["error"]["message"]
    assert not doc(env.store, "dev-0").force
    nothing = env.call("devices.force_update", {"ids": ["dev-2"], "confirm": 1})
    assert code(nothing) == "invalid" and "no bundle assigned" in nothing["error"]["message"]

    ok = env.call("devices.force_update", {"ids": ["dev-0", "dev-1"], "confirm": 2})
    assert [i["bundle_ref"] for i in ok["items"]] == ["warehouse-monitor@1.3.0"] * 2
    assert doc(env.store, "dev-0").force and doc(env.store, "dev-1").force
    events = env.store.rows("SELECT kind, device_id FROM events WHERE kind = 'update.forced'")
    assert len(events) == 2
    # another version assigned: the override was for 1.3.0 only
    env.call("bundles.push", {"spec": {**spec("1.3.0"), "version": "1.4.0"}})
    env.call("assign", {"target": "device:dev-0", "bundle": "warehouse-monitor@1.4.0"})
    assert not doc(env.store, "dev-0").force and doc(env.store, "dev-1").force


def test_deferral_shows_in_get_and_summary(env: Env) -> None:
    gate = {
        "state": "deferred",
        "kind": "locked",
        "reason": "locked by anna since 2026-12-04T21:00+01:00",
        "generation": 7,
        "bundle_ref": "warehouse-monitor@1.3.0",
        "locks": [{"who": "anna", "since": 1.0, "source": "api"}],
        "as_of": "2026-12-04T20:00:01.000Z",
    }
    env.store.set_reported("dev-0", {"gate": gate}, "2026-12-04T20:00:01.000Z")
    got = env.call("devices.get", {"id": "dev-0"})
    assert got["gate"]["reason"] == gate["reason"] and got["gate"]["generation"] == 7
    items = env.call("devices.list", {"view": "summary"})["items"]
    by_id = {d["id"]: d for d in items}
    assert by_id["dev-0"]["gate"]["kind"] == "locked" and by_id["dev-1"]["gate"] is None
    env.store.set_reported("dev-0", {"gate": {**gate, "state": "clear"}}, "2026-12-04T20:00:02Z")
    assert env.call("devices.get", {"id": "dev-0"})["gate"] is None
    assert json.dumps(got)  # serialisable as sent
