"""Rollouts on a real SQLite fleet store, through the API pipeline (``dispatch`` with the
``rollouts.*`` handlers) and ``engine.tick``: phases, device progress from reported state
(written as ingest writes it), completion, pause/resume, abort restoring assignments.

No NATS here: the controller's publishing is covered by tests/integration/test_rollout_api.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bundles.validate import load_file
from hub.api.dispatch import dispatch
from hub.api.handlers import HANDLERS
from hub.bus import ORIGIN_API, Event, EventBus
from hub.rollouts import engine, views
from hub.rollouts.api import VERBS
from hub.rollouts.controller import ORIGIN, RolloutController
from hub.rollouts.machine import Observation
from hub.rollouts.observe import acknowledged, observe
from hub.store import Store
from hub.timeutil import now_iso
from protocol.errors import is_error

EXAMPLES = Path(__file__).resolve().parents[2] / "bundles" / "examples" / "warehouse-monitor"
OLD, NEW = "warehouse-monitor@1.2.0", "warehouse-monitor@1.3.0"


class Env:
    def __init__(self, store: Store) -> None:
        self.store = store
        _, self.admin = store.create_api_key("admin", "admin")
        _, self.ro = store.create_api_key("viewer", "readonly")
        self.handlers = {**HANDLERS, **VERBS}
        self.gen: dict[str, int] = {}
        for v in ("1.2.0", "1.3.0"):
            assert not is_error(self.call("bundles.push", {"spec": spec(v)}))
        self.call("groups.create", {"name": "lab"})
        for i in range(4):
            store.upsert_device(f"dev-{i}", "acme")
            store.set_device_status(f"dev-{i}", "online")
            self.call("groups.add", {"name": "lab", "device": f"dev-{i}"})
        self.call("assign", {"target": "group:lab", "bundle": OLD})

    def call(self, verb: str, body: Any = None, key: str = "admin") -> dict[str, Any]:
        k = self.admin if key == "admin" else self.ro
        return dispatch(self.store, verb, json.dumps(body or {}).encode(), k, self.handlers).body

    def report(self, device: str, status: str | None, reason: str | None = None) -> None:
        """What ingest keeps after the agent stored the rollout's desired revision and
        (optionally) reported the deployment's status."""
        rollout = self.store.scalar(
            "SELECT rollout_id FROM rollout_targets WHERE device_id = ? ORDER BY rowid DESC",
            (device,),
        )
        gen = self.gen.setdefault(device, 10)
        doc: dict[str, Any] = {
            "desired": {"generation": gen, "rollout_id": rollout, "bundle_ref": NEW}
        }
        if status is not None:
            doc["deployment"] = {
                "generation": gen,
                "bundle_ref": NEW,
                "status": status,
                "reason": reason,
            }
        self.store.set_reported(device, doc)

    def desired(self, device: str) -> str | None:
        a = self.store.resolve_desired([device])[device]
        return None if a is None else a.ref

    def states(self, rollout_id: str) -> dict[str, str]:
        got = self.call("rollouts.get", {"id": rollout_id})
        return {d["device"]: d["state"] for d in got["devices"]}


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def spec(version: str) -> dict[str, Any]:
    return load_file(EXAMPLES / f"{version}.yaml").to_dict()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    store = Store.open(tmp_path / "hub.db")
    yield Env(store)
    store.close()


def start(env: Env, **extra: Any) -> dict[str, Any]:
    out = env.call("rollouts.start", {"bundle": NEW, "target": "group:lab", **extra})
    assert not is_error(out), out
    return out


def test_canary_then_the_rest_then_the_group_is_assigned(env: Env) -> None:
    r = start(env, canary_percent=25)
    assert (r["state"], r["phase_count"], r["total"], r["phase"]) == ("running", 2, 4, None)
    assert r["counts"] == {"Pending": 4, "Updating": 0, "Succeeded": 0, "Failed": 0}

    result = engine.tick(env.store)
    assert result.publish == ["dev-0"]  # the canary: one device of four
    assert env.desired("dev-0") == NEW and env.desired("dev-1") == OLD
    assert result.notices and result.notices[0][0] == "progress"

    env.report("dev-0", None)
    engine.tick(env.store)
    assert env.states(r["id"])["dev-0"] == "Updating"
    env.report("dev-0", "applying")
    assert engine.tick(env.store).publish == []  # still applying: no new phase
    env.report("dev-0", "healthy")
    result = engine.tick(env.store)
    assert result.publish == ["dev-1", "dev-2", "dev-3"]
    assert env.states(r["id"]) == {
        "dev-0": "Succeeded",
        "dev-1": "Pending",
        "dev-2": "Pending",
        "dev-3": "Pending",
    }
    for d in ("dev-1", "dev-2", "dev-3"):
        env.report(d, "healthy")
    engine.tick(env.store)
    got = env.call("rollouts.get", {"id": r["id"]})
    assert got["state"] == "succeeded"
    assert got["counts"]["Succeeded"] == 4
    # the group now carries the version and the per-device assignments are gone
    assignments = env.call("assignments.list")["items"]
    assert [(a["target"], a["bundle"], a["version"]) for a in assignments] == [
        ("group:lab", "warehouse-monitor", "1.3.0")
    ]
    assert all(env.desired(f"dev-{i}") == NEW for i in range(4))
    kinds = [e["kind"] for e in env.call("events.list", {"device": "dev-0"})["items"]]
    assert "rollout.succeeded" in kinds and "rollout.desired" in kinds


def test_phases_bake_then_a_device_unhealthy_while_baking_pauses_and_abort_restores(
    env: Env,
) -> None:
    t0 = time.time()
    r = start(env, phases="1,2,100%", bake="1m", max_failures="50%")
    assert [(p["number"], p["size"], p["state"]) for p in r["phases"]] == [
        (1, 1, "pending"),
        (2, 1, "pending"),
        (3, 2, "pending"),
    ]
    # the one computation of the limit, per phase and overall: floor(size * 50%)
    assert [p["max_failures"] for p in r["phases"]] == [0, 0, 1]
    assert (r["steps"], r["bake"], r["max_failures"], r["max_failures_allowed"]) == (
        "1,2,100%",
        60.0,
        "50%",
        2,
    )
    assert {d["phase"] for d in r["devices"]} == {1, 2, 3}
    assert engine.tick(env.store, t0).publish == ["dev-0"]
    env.report("dev-0", "healthy")
    assert engine.tick(env.store, t0 + 1).publish == []  # phase 1 complete: its bake starts
    got = env.call("rollouts.get", {"id": r["id"]})
    one = got["phases"][0]
    assert (got["phase"], one["state"], one["done"]) == (1, "baking", 1)
    assert 0 < one["bake_left"] <= 61  # completed "at t0 + 1", a little ahead of the clock
    assert engine.tick(env.store, t0 + 60).publish == []  # 59 s of 60
    # the bake is over, but dev-0 was not heard from since (a metered device's slow
    # heartbeat, a dropped link): silence is not health, the phase keeps baking and says so
    env.store.set_device_status("dev-0", "online", now_iso(t0 + 30))
    assert engine.tick(env.store, t0 + 61.5).publish == []
    got = env.call("rollouts.get", {"id": r["id"]})
    late = views.summary(env.store, env.store.rollout_row(r["id"]), now=t0 + 61.5)
    assert (late["phases"][0]["state"], late["phases"][0]["unheard"]) == ("baking", 1)
    assert got["reason"] == (
        f"phase 1 baked; waiting to hear from 1 device after {stamp(t0 + 61)}: dev-0, last"
        f" heard {stamp(t0 + 30)}"
    )
    env.store.set_device_status("dev-0", "online", now_iso(t0 + 62))  # its next heartbeat
    assert engine.tick(env.store, t0 + 62).publish == ["dev-1"]
    assert env.call("rollouts.get", {"id": r["id"]})["reason"] == ""
    env.report("dev-1", "healthy")
    engine.tick(env.store, t0 + 62)
    # a container snapshot newer than its success shows a crash loop while phase 2 bakes
    doc = env.store.get_reported("dev-1")["state"]
    doc["observed"] = {
        "containers": [{"service": "relay", "state": "restarting"}],
        "as_of": "9999-01-01T00:00:00.000Z",
    }
    env.store.set_reported("dev-1", doc)
    assert engine.tick(env.store, t0 + 70).publish == []
    got = env.call("rollouts.get", {"id": r["id"]})
    row = next(d for d in got["devices"] if d["device"] == "dev-1")
    assert (row["state"], row["reason"]) == (
        "Failed",
        "unhealthy while baking: 1 container not healthy (relay)",
    )
    assert got["state"] == "paused"
    assert got["reason"].startswith("phase 2 of 3: 1 of 1 device failed, more than max-failures")
    assert env.desired("dev-2") == OLD  # phase 3 never started
    out = env.call("rollouts.abort", {"id": r["id"]})
    assert sorted(out["restored"]) == ["dev-0", "dev-1"]
    assert all(env.desired(f"dev-{i}") == OLD for i in range(4))


def test_the_controllers_memo_sees_every_change_and_reuses_the_rest(env: Env) -> None:
    """The observations carried between ticks (engine.Memo, as the controller keeps them):
    an unchanged device is not parsed again, a changed document is, and the rollout moves
    exactly as without the memo."""
    memo = engine.Memo()
    r = start(env)  # one phase: all four written on the first tick
    assert engine.tick(env.store, None, memo).publish == [f"dev-{i}" for i in range(4)]
    engine.tick(env.store, None, memo)
    assert (memo.hits, memo.misses) == (0, 4)  # nothing reported: every key is new
    engine.tick(env.store, None, memo)
    assert (memo.hits, memo.misses) == (4, 4)  # nothing changed: no document parsed
    env.report("dev-0", "applying")
    env.report("dev-1", "healthy")
    engine.tick(env.store, None, memo)
    assert (memo.hits, memo.misses) == (6, 6)
    assert env.states(r["id"]) == {
        "dev-0": "Updating", "dev-1": "Succeeded", "dev-2": "Pending", "dev-3": "Pending",
    }  # fmt: skip
    assert (r["id"], "dev-1") not in memo.seen  # final: never observed again
    for d in ("dev-0", "dev-2", "dev-3"):
        env.report(d, "healthy")
    engine.tick(env.store, None, memo)
    assert env.call("rollouts.get", {"id": r["id"]})["state"] == "succeeded"
    engine.tick(env.store, None, memo)
    assert memo.seen == {}  # a finished rollout leaves nothing behind


def test_rollouts_from_before_phases_migrate_to_one_numbering(tmp_path: Path) -> None:
    """A database written with 0-based waves: after the phases migration its devices are in
    phases 1 and 2 and the phases table knows both."""
    import sqlite_utils

    from hub.store import migrations

    db = sqlite_utils.Database(tmp_path / "old.db")
    saved = migrations.MIGRATIONS
    try:
        phases = next(v for v, name, _ in saved if name.startswith("rollouts: phases"))
        migrations.MIGRATIONS = [mg for mg in saved if mg[0] < phases]
        migrations.migrate(db)
    finally:
        migrations.MIGRATIONS = saved
    # (foreign keys are off on this bare connection: only the rollout tables matter)
    db.execute(
        "INSERT INTO rollouts (id, bundle, version, target_kind, target, status,"
        " canary_percent, max_failures, created_at, updated_at)"
        " VALUES ('ro-1', 'b', '1', 'tag', 't', 'running', 34, 0, 'x', 'x')"
    )
    for d, wave, written in (("a", 0, "2026-01-01T00:00:00.000Z"), ("b", 1, None), ("c", 1, None)):
        db.execute(
            "INSERT INTO rollout_targets (rollout_id, device_id, wave, updated_at, written_at)"
            " VALUES ('ro-1', ?, ?, 'x', ?)",
            (d, wave, written),
        )
    assert phases in migrations.migrate(db)
    placed = dict(db.execute("SELECT device_id, phase FROM rollout_targets").fetchall())
    assert placed == {"a": 1, "b": 2, "c": 2}
    assert db.execute(
        "SELECT number, size, started_at FROM rollout_phases ORDER BY number"
    ).fetchall() == [(1, 1, "2026-01-01T00:00:00.000Z"), (2, 2, None)]


def test_failures_beyond_the_threshold_pause_with_reasons(env: Env) -> None:
    r = start(env, canary_percent=50, max_failures=0)
    engine.tick(env.store)
    env.report("dev-0", "rolled_back", "relay unhealthy for 60s")
    env.report("dev-1", "healthy")
    assert engine.tick(env.store).publish == []
    got = env.call("rollouts.get", {"id": r["id"]})
    assert got["state"] == "paused"
    assert "more than max-failures 0" in got["reason"]
    row = next(d for d in got["devices"] if d["device"] == "dev-0")
    assert (row["state"], row["reason"]) == ("Failed", "rolled back: relay unhealthy for 60s")
    assert env.desired("dev-2") == OLD  # the second phase never started

    # resume accepts that failure and goes on with the rest
    assert env.call("rollouts.resume", {"id": r["id"]})["state"] == "running"
    assert engine.tick(env.store).publish == ["dev-2", "dev-3"]
    env.report("dev-2", "healthy")
    env.report("dev-3", "healthy")
    engine.tick(env.store)
    got = env.call("rollouts.get", {"id": r["id"]})
    assert (got["state"], got["reason"]) == ("failed", "1 of 4 devices failed")


def test_abort_restores_previous_assignments(env: Env) -> None:
    env.call("assign", {"target": "device:dev-1", "bundle": OLD})  # a device-level pin
    r = start(env)
    engine.tick(env.store)
    assert all(env.desired(f"dev-{i}") == NEW for i in range(4))
    env.call("assign", {"target": "device:dev-2", "bundle": OLD})  # an operator decided since
    env.call("assign", {"target": "device:dev-3", "bundle": NEW})
    out = env.call("rollouts.abort", {"id": r["id"]})
    assert out["state"] == "aborted"
    assert out["restored"] == ["dev-0", "dev-1"]
    assert env.desired("dev-0") == OLD  # back to the group's assignment
    pins = {a["target"]: a["version"] for a in env.call("assignments.list")["items"]}
    assert pins == {
        "group:lab": "1.2.0",
        "device:dev-1": "1.2.0",
        "device:dev-2": "1.2.0",
        "device:dev-3": "1.3.0",
    }
    # aborted is final: nothing moves any more
    env.report("dev-0", "healthy")
    assert engine.tick(env.store).notices == []
    assert env.call("rollouts.abort", {"id": r["id"]})["error"]["code"] == "conflict"


def test_offline_devices_stay_pending_and_finish_when_back(env: Env) -> None:
    env.store.set_device_status("dev-3", "offline")
    r = start(env)
    engine.tick(env.store)
    for d in ("dev-0", "dev-1", "dev-2"):
        env.report(d, "healthy")
    engine.tick(env.store)
    got = env.call("rollouts.get", {"id": r["id"]})
    assert (got["state"], got["offline"]) == ("running", 1)
    row = next(d for d in got["devices"] if d["device"] == "dev-3")
    assert (row["state"], row["online"]) == ("Pending", False)
    assert "offline" in row["reason"]
    env.store.set_device_status("dev-3", "online")
    env.report("dev-3", "healthy")
    engine.tick(env.store)
    assert env.call("rollouts.get", {"id": r["id"]})["state"] == "succeeded"


def test_pause_holds_the_next_phase(env: Env) -> None:
    r = start(env, canary_percent=25)
    engine.tick(env.store)
    assert env.call("rollouts.pause", {"id": r["id"]})["state"] == "paused"
    assert env.call("rollouts.pause", {"id": r["id"]})["error"]["code"] == "conflict"
    env.report("dev-0", "healthy")
    assert engine.tick(env.store).publish == []
    assert env.states(r["id"])["dev-0"] == "Succeeded"  # progress is still recorded
    env.call("rollouts.resume", {"id": r["id"]})
    assert engine.tick(env.store).publish == ["dev-1", "dev-2", "dev-3"]


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"bundle": NEW, "target": "group:nope"}, "not_found", "target"),
        ({"bundle": "warehouse-monitor@9.9.9", "target": "group:lab"}, "not_found", "bundle"),
        ({"bundle": "nope", "target": "group:lab"}, "invalid", "bundle"),
        ({"bundle": NEW, "target": "planet:x"}, "invalid", "target"),
        ({"bundle": NEW, "target": "tag:none"}, "invalid", "target"),
        (
            {"bundle": NEW, "target": "group:lab", "canary_percent": 101},
            "invalid",
            "canary_percent",
        ),
        ({"bundle": NEW, "target": "group:lab", "max_failures": -1}, "invalid", "max_failures"),
        (
            {"bundle": NEW, "target": "group:lab", "canary_percent": "10%"},
            "invalid",
            "canary_percent",
        ),
        ({"bundle": NEW}, "invalid", "target"),
        ({"bundle": NEW, "target": "group:lab", "wave": 2}, "invalid", "wave"),
        ({"bundle": NEW, "target": "group:lab", "phases": "10%,5%"}, "invalid", "phases"),
        ({"bundle": NEW, "target": "group:lab", "phases": "0%"}, "invalid", "phases"),
        (
            {"bundle": NEW, "target": "group:lab", "phases": "10%", "canary_percent": 10},
            "invalid",
            "phases",
        ),
        ({"bundle": NEW, "target": "group:lab", "bake": "10 minutes"}, "invalid", "bake"),
        ({"bundle": NEW, "target": "group:lab", "bake": 700_000}, "invalid", "bake"),
        ({"bundle": NEW, "target": "group:lab", "max_failures": "2.5"}, "invalid", "max_failures"),
        ({"bundle": NEW, "target": "group:lab", "max_failures": "101%"}, "invalid", "max_failures"),
        ({"bundle": NEW, "target": "group:lab", "max_failures": True}, "invalid", "max_failures"),
    ],
)
def test_bad_start_bodies_store_nothing(
    env: Env, body: dict[str, Any], code: str, field: str
) -> None:
    out = env.call("rollouts.start", body)
    assert (out["error"]["code"], out["error"].get("field")) == (code, field)
    assert env.store.scalar("SELECT count(*) FROM rollouts") == 0


def test_one_active_rollout_per_device_and_readonly_cannot_start(env: Env) -> None:
    start(env)
    again = env.call("rollouts.start", {"bundle": NEW, "target": "device:dev-1"})
    assert again["error"]["code"] == "conflict"
    ro = env.call("rollouts.start", {"bundle": NEW, "target": "group:lab"}, key="ro")
    assert ro["error"]["code"] == "forbidden"
    assert env.call("rollouts.list", key="ro")["items"][0]["state"] == "running"
    assert env.call("rollouts.get", {"id": "ro-nope"})["error"]["code"] == "not_found"
    assert env.call("rollouts.list", {"state": "odd"})["error"]["field"] == "state"


def test_list_pages_newest_first(env: Env) -> None:
    ids = []
    for i in range(3):
        r = (
            start(env)
            if i == 0
            else env.call("rollouts.start", {"bundle": NEW, "target": f"device:dev-{i}"})
        )
        ids.append(r["id"])
        if i == 0:
            env.call("rollouts.abort", {"id": r["id"]})
    page = env.call("rollouts.list", {"limit": 2})
    assert [i["id"] for i in page["items"]] == ids[::-1][:2]
    rest = env.call("rollouts.list", {"limit": 2, "cursor": page["next_cursor"]})
    assert [i["id"] for i in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
    assert [i["id"] for i in env.call("rollouts.list", {"state": "aborted"})["items"]] == [ids[0]]


# --- reading reports ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("doc", "base", "want"),
    [
        (None, None, None),
        ({"desired": {"generation": 5, "rollout_id": "ro-1"}}, None, 5),
        ({"desired": {"generation": 5, "rollout_id": "ro-2", "bundle_ref": NEW}}, None, None),
        # a writer that leaves the rollout id out: the version and a newer generation do
        ({"desired": {"generation": 5, "bundle_ref": NEW}}, 4, 5),
        ({"desired": {"generation": 4, "bundle_ref": NEW}}, 4, None),
        ({"deployment": {"generation": 6, "bundle_ref": NEW, "status": "healthy"}}, 4, 6),
        ({"deployment": {"generation": 3, "bundle_ref": NEW, "status": "healthy"}}, 4, None),
        ({"desired": "garbage", "deployment": [1]}, None, None),
        ({"desired": {"generation": True, "rollout_id": "ro-1"}}, None, None),
    ],
)
def test_acknowledged(doc: Any, base: int | None, want: int | None) -> None:
    assert acknowledged(doc, "ro-1", NEW, base) == want


def test_observe_reads_the_acknowledged_generations_deployment() -> None:
    doc = {
        "desired": {"generation": 8, "rollout_id": "ro-1", "bundle_ref": NEW},
        "deployment": {"generation": 8, "bundle_ref": NEW, "status": "rolled_back", "reason": "x"},
    }
    assert observe(doc, "ro-1", NEW, None, None).status == "rolled_back"
    old = {**doc, "deployment": {"generation": 7, "bundle_ref": OLD, "status": "healthy"}}
    assert observe(old, "ro-1", NEW, None, None).status is None  # acknowledged, not yet applied
    # once known, the generation sticks even after the device's desired state moved on
    later = {"desired": {"generation": 9, "rollout_id": None, "bundle_ref": OLD}}
    assert observe(later, "ro-1", NEW, None, 8).generation == 8


def test_get_pages_the_devices_and_counts_them_all(env: Env) -> None:
    r = start(env)
    first = env.call("rollouts.get", {"id": r["id"], "limit": 3})
    assert [d["device"] for d in first["devices"]] == ["dev-0", "dev-1", "dev-2"]
    assert (first["devices_cursor"], first["total"]) == ("dev-2", 4)
    rest = env.call("rollouts.get", {"id": r["id"], "limit": 3, "cursor": first["devices_cursor"]})
    assert [d["device"] for d in rest["devices"]] == ["dev-3"] and rest["devices_cursor"] is None
    assert env.call("rollouts.get", {"id": r["id"], "cursor": "Not An Id"})["error"]["field"] == (
        "cursor"
    )
    assert env.call("rollouts.get", {"id": r["id"], "limit": 0})["error"]["field"] == "limit"


def test_a_device_decommissioned_mid_rollout_fails_instead_of_holding_it(env: Env) -> None:
    r = start(env, max_failures=1)
    engine.tick(env.store)
    for d in ("dev-0", "dev-1", "dev-2"):
        env.report(d, "healthy")
    env.call("devices.decommission", {"id": "dev-3"})
    engine.tick(env.store)
    got = env.call("rollouts.get", {"id": r["id"]})
    assert (got["state"], got["reason"]) == ("failed", "1 of 4 devices failed")
    assert got["devices"][3]["reason"] == "device decommissioned"


def test_a_newer_revision_of_the_same_rollout_supersedes_without_failing() -> None:
    """The agent closes a generation superseded inside its health window as failed; when the
    newer revision is still this rollout's, that is no verdict on the version."""
    doc = {
        "desired": {"generation": 9, "rollout_id": "ro-1", "bundle_ref": NEW},
        "deployment": {"generation": 8, "bundle_ref": NEW, "status": "failed",
                       "reason": "superseded by generation 9 before it was healthy"},
    }  # fmt: skip
    assert observe(doc, "ro-1", NEW, None, 8) == Observation(9)
    # superseded by something else (the device's desired state left the rollout): it failed
    away = {**doc, "desired": {"generation": 9, "rollout_id": None, "bundle_ref": OLD}}
    got = observe(away, "ro-1", NEW, None, 8)
    assert (got.generation, got.status) == (8, "failed")


def test_a_large_target_is_planned_in_chunks(env: Env) -> None:
    with env.store.tx():
        for i in range(1200):
            env.store.upsert_device(f"big-{i:04d}", "acme", tags=["big"])
    r = env.call("rollouts.start", {"bundle": NEW, "target": "tag:big", "canary_percent": 1})
    assert (r["total"], r["phase_count"], len(r["devices"]), r["devices_cursor"]) == (
        1200,
        2,
        1000,
        "big-0999",
    )
    assert len(engine.tick(env.store).publish) == 12
    again = env.call("rollouts.start", {"bundle": NEW, "target": "device:big-1199"})
    assert again["error"]["code"] == "conflict"


class _Hub:
    """The controller's view of the hub: the store, run inline, and an event bus; no NATS,
    no API."""

    def __init__(self, store: Store) -> None:
        self.store, self.nc, self.api = store, None, None
        self.bus = EventBus()

    async def call(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


async def test_device_notices_wake_the_controller_only_while_a_rollout_is_active(
    env: Env,
) -> None:
    ctl = RolloutController(publisher=lambda _hub: None)
    ctl._hub = _Hub(env.store)
    reported = Event("reported", "changed", {"devices": ["dev-0"]}, origin="sync")
    assert (await ctl.run_once()).active == 0
    await ctl._on_event(reported)  # nothing can move: no tick for it
    assert not ctl._wake.is_set()
    r = start(env)
    await ctl._on_event(Event("rollouts", "started", {"id": r["id"]}, origin=ORIGIN_API))
    assert ctl._wake.is_set()  # a rollout notice always wakes it
    ctl._wake.clear()
    assert (await ctl.run_once()).active == 1
    await ctl._on_event(reported)  # now a report may move a device
    assert ctl._wake.is_set()


async def test_the_controller_publishes_on_the_bus_and_never_wakes_itself(env: Env) -> None:
    hub = _Hub(env.store)
    asked: list[list[str]] = []

    class Writer:
        """Stands in for the desired writer: its put, not the controller, publishes the
        desired notice (as hub.sync does, origin sync)."""

        async def publish(self, ids: Any = None, *, prompt: bool = False) -> None:
            if prompt:  # the periodic re-publish of the unacknowledged: prompts, no put
                return
            asked.append(sorted(ids))
            await hub.bus.publish(Event("desired", "changed", {"devices": sorted(ids)}, "sync"))

    ctl = RolloutController(publisher=lambda _hub: Writer())
    ctl._hub = hub
    hub.bus.subscribe(ORIGIN, ctl._on_event)  # what start() does
    heard: list[Event] = []

    async def listener(event: Event) -> None:
        heard.append(event)

    hub.bus.subscribe("nats", listener, inline=True)  # e.g. the change notices
    start(env)
    result = await ctl.run_once()  # the first phase starts: documents written, progress
    assert result.desired_changed and asked == [result.desired_changed]
    by = {(e.kind, e.origin) for e in heard}
    assert ("rollouts", ORIGIN) in by and ("desired", ORIGIN) not in by  # the writer's only
    for _ in range(10):
        await asyncio.sleep(0)
    assert not hub.bus._tasks
    # Neither its own events nor the writer's notice of its own phase wake it for a tick.
    assert not ctl._wake.is_set()


def _defer(env: Env, device: str, reason: str, kind: str = "locked") -> None:
    """What ingest keeps when the agent stored the rollout's revision and its update gate
    defers it (agent.updategate.UpdateGate.note): no deployment row, a deferred gate."""
    env.report(device, None)
    doc = json.loads(env.store.reported_texts([device])[device])
    doc["gate"] = {"state": "deferred", "generation": env.gen[device], "bundle_ref": NEW,
                   "kind": kind, "reason": reason, "as_of": "2026-12-05T01:00:00.000Z"}  # fmt: skip
    env.store.set_reported(device, doc)


def test_a_locked_device_is_deferred_not_failed_and_its_phase_waits_saying_so(
    env: Env,
) -> None:
    """Update lock / maintenance window x phased rollout: the device that acknowledged the
    rollout's revision but holds it is Pending "deferred: <the device's words>", never
    Updating or Failed; its phase waits, and rollouts.get says why, per device, per phase and
    in the rollout's reason; released, the rollout goes on."""
    r = start(env, phases="2,100%", max_failures=0)
    engine.tick(env.store)
    first = sorted(d for d, s in env.states(r["id"]).items() if env.desired(d) == NEW)
    assert len(first) == 2
    locked = "locked by temp-sensor since 2026-12-05T01:40+01:00"
    window = "outside maintenance window until 2026-12-05T02:00+01:00"
    _defer(env, first[0], locked)
    _defer(env, first[1], window, "window")
    engine.tick(env.store)
    got = env.call("rollouts.get", {"id": r["id"]})
    rows = {d["device"]: d for d in got["devices"]}
    assert (rows[first[0]]["state"], rows[first[0]]["reason"]) == ("Pending", f"deferred: {locked}")
    assert (rows[first[1]]["state"], rows[first[1]]["reason"]) == ("Pending", f"deferred: {window}")
    assert got["state"] == "running" and got["counts"]["Failed"] == 0
    assert (
        got["reason"] == f"phase 1 waits for 2 deferred devices: {first[0]} {locked} (and 1 more)"
    )
    assert (got["deferred"], got["phases"][0]["deferred"], got["phases"][1]["deferred"]) == (
        2,
        2,
        0,
    )
    assert not set(first) & set(engine.unacknowledged(env.store))  # acknowledged: not re-sent
    # many ticks later nothing moved: no phase 2, no failure
    for _ in range(3):
        engine.tick(env.store, now=time.time() + 3600)
    got = env.call("rollouts.get", {"id": r["id"]})
    assert (got["phase"], got["counts"]["Failed"]) == (1, 0)
    # the lock released and the window open: each applies; the rollout goes on to phase 2
    for d in first:
        env.report(d, "applying")
    engine.tick(env.store)
    got = env.call("rollouts.get", {"id": r["id"]})
    assert (got["reason"], got["deferred"]) == ("", 0)
    assert {env.states(r["id"])[d] for d in first} == {"Updating"}
    for d in first:
        env.report(d, "healthy")
    engine.tick(env.store)
    assert env.call("rollouts.get", {"id": r["id"]})["phase"] == 2


def test_a_gate_about_another_revision_says_nothing_about_this_rollout() -> None:
    doc = {
        "desired": {"generation": 12, "rollout_id": "ro-1", "bundle_ref": NEW},
        "gate": {"state": "deferred", "generation": 11, "bundle_ref": NEW, "reason": "old"},
    }
    assert observe(doc, "ro-1", NEW, 5, None) == Observation(12)
    doc["gate"] = {"state": "deferred", "generation": 12, "bundle_ref": OLD, "reason": "x"}
    assert observe(doc, "ro-1", NEW, 5, None) == Observation(12)
    doc["gate"] = {"state": "clear", "generation": 12, "bundle_ref": NEW}
    assert observe(doc, "ro-1", NEW, 5, None) == Observation(12)
    doc["gate"] = {"state": "deferred", "generation": 12, "bundle_ref": NEW, "reason": "locked"}
    assert observe(doc, "ro-1", NEW, 5, None) == Observation(12, deferred="locked")


def test_a_field_override_holds_the_rollouts_device_until_cleared(env: Env) -> None:
    """A local override (``signalbeam-agent apply``) lands on a rollout's device while its
    revision applies: the agent leaves that revision applying (it runs again when the
    override is cleared), so the device is held by its site — Pending "deferred: local
    override ...", not Failed — and once cleared it is judged on the rollout's version."""
    r = start(env, phases="1,100%")
    engine.tick(env.store)
    first = next(d for d in env.states(r["id"]) if env.desired(d) == NEW)
    env.report(first, "applying")
    engine.tick(env.store)
    assert env.states(r["id"])[first] == "Updating"
    doc = json.loads(env.store.reported_texts([first])[first])
    doc["desired"] = {"generation": 11, "source": "local", "bundle_ref": "warehouse-monitor@9.9.9"}
    doc["deployment"] = {"generation": 11, "source": "local", "status": "healthy",
                         "bundle_ref": "warehouse-monitor@9.9.9"}  # fmt: skip
    env.store.set_reported(first, doc)
    engine.tick(env.store)
    got = env.call("rollouts.get", {"id": r["id"]})
    row = next(d for d in got["devices"] if d["device"] == first)
    assert row["state"] == "Pending"
    assert row["reason"].startswith("deferred: local override warehouse-monitor@9.9.9 in force")
    assert got["reason"].startswith(f"phase 1 waits for 1 deferred device: {first} local override")
    assert got["counts"]["Failed"] == 0
    env.report(first, "healthy")  # cleared: the rollout's revision runs and is judged
    engine.tick(env.store)
    assert env.states(r["id"])[first] == "Succeeded"


def test_a_device_joining_the_group_mid_phase_is_not_swept_in_and_gets_it_at_the_end(
    env: Env,
) -> None:
    """A device that joins the rollout's group while a phase runs is not in the rollout (its
    devices were planned at the start, so no phase grows behind the operator's back): it
    keeps the group's version until the rollout succeeds and the group is assigned the new
    one; then it follows like every later joiner. (Regression guard: this already held.)"""
    r = start(env, phases="1,100%")
    engine.tick(env.store)
    first = next(d for d in env.states(r["id"]) if env.desired(d) == NEW)
    env.store.upsert_device("dev-9", "acme")
    env.store.set_device_status("dev-9", "online")
    env.call("groups.add", {"name": "lab", "device": "dev-9"})
    env.report(first, "healthy")
    engine.tick(env.store)
    got = env.call("rollouts.get", {"id": r["id"]})
    assert got["total"] == 4 and "dev-9" not in {d["device"] for d in got["devices"]}
    assert env.desired("dev-9") == OLD
    for d in env.states(r["id"]):
        env.report(d, "healthy")
    engine.tick(env.store)
    assert env.call("rollouts.get", {"id": r["id"]})["state"] == "succeeded"
    assert env.desired("dev-9") == NEW


def test_forced_through_the_lock_the_deferred_device_updates_and_succeeds(env: Env) -> None:
    """`device force-update --force-through-lock` on a deferred rollout device: the hub
    re-sends the rollout's version with ``force`` (a newer generation of the same rollout);
    the agent starts it through the lock. The stale deferral of the older generation says
    nothing any more: Updating, then Succeeded. (Regression guard: this already held.)"""
    r = start(env, phases="1,100%")
    engine.tick(env.store)
    first = next(d for d in env.states(r["id"]) if env.desired(d) == NEW)
    _defer(env, first, "locked by temp-sensor since 2026-12-05T01:40+01:00")
    engine.tick(env.store)
    assert env.states(r["id"])[first] == "Pending"
    doc = json.loads(env.store.reported_texts([first])[first])
    doc["desired"]["generation"] = 11  # the forced revision; the gate part still says 10
    doc["deployment"] = {"generation": 11, "bundle_ref": NEW, "status": "applying"}
    env.store.set_reported(first, doc)
    engine.tick(env.store)
    assert env.states(r["id"])[first] == "Updating"
    doc["deployment"]["status"] = "healthy"
    env.store.set_reported(first, doc)
    engine.tick(env.store)
    assert env.states(r["id"])[first] == "Succeeded"
    assert env.call("rollouts.get", {"id": r["id"]})["deferred"] == 0
