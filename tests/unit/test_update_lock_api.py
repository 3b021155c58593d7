"""Update locks through the local API (real aiohttp app, real SQLite store): a field tech
takes and releases a lock, each change audited with who; lock files an app creates show
too; a viewer may look but not lock; bad input names its field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent.config import AgentConfig, UpdateConfig
from agent.http.app import build_app
from agent.http.context import AppContext
from agent.http.tokens import TokenStore
from agent.store import Store, updatelocks
from agent.updategate import UpdateGate, file_locks
from protocol.desired import DesiredState


@pytest.fixture
def ctx(tmp_path: Path) -> AppContext:
    store = Store.open(tmp_path / "agent.db", device_id="unit-dev")
    return AppContext(
        config=AgentConfig(
            data_dir=tmp_path,
            device_id="unit-dev",
            update=UpdateConfig(lock_dir=tmp_path / "locks"),
        ),
        store=store,
        tokens=TokenStore.in_data_dir(tmp_path),
    )


@pytest.fixture
async def client(ctx: AppContext) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_app(ctx))) as c:
        yield c


def bearer(ctx: AppContext, name: str, role: str) -> dict[str, str]:
    _, text = ctx.tokens.create(name, role, created_by="test")  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {text}"}


async def test_a_tech_holds_and_releases_a_lock_audited(
    ctx: AppContext, client: TestClient
) -> None:
    anna = bearer(ctx, "anna", "operator")
    r = await client.post("/v1/update-lock", json={"reason": "calibrating"}, headers=anna)
    assert r.status == 201, await r.text()
    body = await r.json()
    assert body["who"] == "anna" and body["source"] == "api" and body["new"] is True
    # taken again: the same lock, its start kept
    r = await client.post("/v1/update-lock", json={"reason": "still"}, headers=anna)
    assert r.status == 200 and (await r.json())["since"] == body["since"]

    gate = UpdateGate(ctx.store, ctx.config.update.lock_dir, UTC)
    d = gate.check(DesiredState(5, {"bundle": "b", "version": "2"}), None)
    assert not d.allow and d.reason is not None and d.reason.startswith("locked by anna since")

    r = await client.get("/v1/update-lock", headers=anna)
    got = await r.json()
    assert got["held"] is True and [lk["who"] for lk in got["locks"]] == ["anna"]

    r = await client.delete("/v1/update-lock", headers=anna)
    assert r.status == 200 and (await r.json())["released"] is True
    r = await client.delete("/v1/update-lock", headers=anna)
    assert r.status == 404 and (await r.json())["error"]["field"] == "who"
    assert gate.check(DesiredState(5, {"bundle": "b", "version": "2"}), None).allow

    events = [(e.kind, e.data) for e in ctx.store.events() if e.kind.startswith("update_lock")]
    assert [k for k, _ in events] == ["update_lock.held", "update_lock.released"]
    assert all(data and data["who"] == "anna" and "anna" in data["actor"] for _, data in events)


async def test_lock_files_are_locks_and_show_in_the_api(
    ctx: AppContext, client: TestClient
) -> None:
    lock_dir = ctx.config.update.lock_dir
    lock_dir.mkdir()
    (lock_dir / "temp-sensor.lock").write_text("temp-sensor calibration\n")
    (lock_dir / "empty.lock").write_text("")
    (lock_dir / "notalock.txt").write_text("x")
    assert sorted((lk.who, lk.source) for lk in file_locks(lock_dir)) == [
        ("empty", "file:empty.lock"),
        ("temp-sensor calibration", "file:temp-sensor.lock"),
    ]
    r = await client.get("/v1/update-lock", headers=bearer(ctx, "viewer1", "viewer"))
    assert (await r.json())["held"] is True
    assert file_locks(lock_dir / "missing") == []


async def test_viewers_may_not_lock_and_bad_input_names_the_field(
    ctx: AppContext, client: TestClient
) -> None:
    r = await client.post("/v1/update-lock", json={}, headers=bearer(ctx, "v", "viewer"))
    assert r.status == 403
    op = bearer(ctx, "op", "operator")
    for body, field in (({"who": ""}, "who"), ({"reason": 5}, "reason"), ({"x": 1}, "x")):
        r = await client.post("/v1/update-lock", json=body, headers=op)
        assert r.status == 422, (body, await r.text())
        assert (await r.json())["error"]["field"] == field
    assert updatelocks.held(ctx.store) == []


def test_gate_report_is_queued_once_per_change(ctx: AppContext) -> None:
    store = ctx.store
    lock = {"who": "x", "since": 1.0, "source": "file:x.lock"}
    doc = {"state": "deferred", "generation": 3, "bundle_ref": "b@2", "reason": "locked by x",
           "locks": [lock]}  # fmt: skip
    assert updatelocks.report_gate(store, {**doc, "state": "clear"}) is False  # nothing to undo
    assert updatelocks.report_gate(store, doc) is True
    assert updatelocks.report_gate(store, doc) is False
    # an app touching its lock file changes the times, not the state: nothing is sent
    touched = {**doc, "reason": "locked by x since later", "locks": [{**lock, "since": 9.0}]}
    assert updatelocks.report_gate(store, touched) is False
    assert updatelocks.report_gate(store, {**doc, "locks": []}) is True  # holders changed
    assert updatelocks.report_gate(store, {**doc, "state": "clear"}) is True
    rows = [r for r in store.outbox_pending() if r.kind == "gate"]
    assert len(rows) == 3
    assert updatelocks.last_gate(store) == {**doc, "state": "clear"}
    assert len([e for e in store.events() if e.kind == "update.deferred"]) == 2


def test_status_says_why_an_update_waits() -> None:
    from agent.http.views import stuck_reason
    from agent.reconcile.loop import LoopResult

    why = "deferred: locked by anna since 2026-12-04T21:00+01:00"
    result = LoopResult(0.0, "timer", 7, "hello@1.0.0", "deferred", why)
    assert stuck_reason({}, result) == why


def test_a_salvaged_revision_keeps_its_gating() -> None:
    from agent.store.desired import salvaged

    row = {"generation": 3, "source": "hub", "spec": None, "rollout_id": None,
           "content_hash": None}  # fmt: skip
    gated = salvaged([{**row, "maintenance_windows": '["* 01:00-02:00"]', "force": 1}])
    assert gated[0].maintenance_windows == ("* 01:00-02:00",) and gated[0].force
    old = salvaged([row])  # a file from before migration 3
    assert old[0].maintenance_windows is None and not old[0].force
