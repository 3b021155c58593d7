"""Rollouts against a real `signalbeam-hub run` over real NATS: the rollouts.* verbs, bad
bodies, auth, change notices, and the controller moving phases as device reports arrive.

No agents here (tests/integration/test_rollout_e2e.py has them): device reports are
written into the hub's reported_state table beside the running hub, in the shape ingest
keeps them, which is exactly what the controller reads.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from hub.store import Store
from tests.harness.wait import eventually
from tests.integration.test_hub_api import HubProcess, expect_error, spec
from tui import cli
from tui.client import HubClient

NEW = "warehouse-monitor@1.3.0"
WAIT = 90.0  # bound on every wait for the controller (it ticks about once a second; loaded box)


def seed(store: Store) -> None:
    store.create_group("lab")
    for i in range(4):
        store.upsert_device(f"dev-{i}", "acme", hostname=f"host-{i}", tags=["rpi"])
        store.set_device_status(f"dev-{i}", "online", "2026-01-01T00:00:00.000Z")
        store.add_to_group("lab", f"dev-{i}")
    store.upsert_device("solo", "acme")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(tmp_path_factory.mktemp("rollouts") / "data", litestream=False, seed=seed)
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


@pytest.fixture
async def admin(hub: HubProcess) -> AsyncIterator[HubClient]:
    async with hub.client() as c:
        for v in ("1.2.0", "1.3.0"):
            await c.call("bundles.push", {"spec": spec(v)})
        yield c


def report(hub: HubProcess, device: str, rollout_id: str, generation: int, status: str) -> None:
    """The device acknowledged the rollout's generation and reports its deployment."""
    doc = {
        "desired": {"generation": generation, "rollout_id": rollout_id, "bundle_ref": NEW},
        "deployment": {
            "generation": generation,
            "bundle_ref": NEW,
            "status": status,
            "reason": "relay unhealthy" if status == "rolled_back" else None,
        },
    }
    conn = sqlite3.connect(hub.data / "hub.db", timeout=10)
    try:
        conn.execute(
            "INSERT OR REPLACE INTO reported_state (device_id, doc, as_of) VALUES (?, ?, ?)",
            (device, json.dumps(doc), "2026-01-01T00:00:00.000Z"),
        )
        conn.commit()
    finally:
        conn.close()


async def until(client: HubClient, rollout_id: str, check: Any) -> dict[str, Any]:
    """Poll rollouts.get until ``check(rollout)`` holds; bounded by WAIT."""

    async def reached() -> dict[str, Any] | None:
        r: dict[str, Any] = await client.call("rollouts.get", {"id": rollout_id})
        return r if check(r) else None

    result: dict[str, Any] = await eventually(
        reached, f"rollout {rollout_id} reaches the state", timeout=WAIT, interval=0.2
    )
    return result


def written(r: dict[str, Any]) -> list[str]:
    return sorted(d["device"] for d in r["devices"] if "waiting for phase" not in d["reason"])


async def test_rollout_goes_phase_by_phase_to_succeeded(
    hub: HubProcess, admin: HubClient, tmp_path: Path
) -> None:
    notices: list[dict[str, Any]] = []
    nc = await nats.connect(hub.url)

    async def on_msg(msg: Msg) -> None:
        notices.append(json.loads(msg.data))

    await nc.subscribe("sb.fleet.changes.rollouts", cb=on_msg)
    try:
        r = await admin.call(
            "rollouts.start", {"bundle": NEW, "target": "group:lab", "canary_percent": 25}
        )
        assert (r["state"], r["total"], r["phase_count"]) == ("running", 4, 2)
        r = await until(admin, r["id"], lambda x: x["phase"] == 1)
        canary = written(r)
        assert canary == ["dev-0"]
        got = await admin.call("devices.get", {"id": "dev-0"})
        assert got["desired"] == {
            "bundle": "warehouse-monitor",
            "version": "1.3.0",
            "via": "device:dev-0",
        }

        report(hub, "dev-0", r["id"], 5, "applying")
        await until(admin, r["id"], lambda x: x["counts"]["Updating"] == 1)
        report(hub, "dev-0", r["id"], 5, "healthy")
        r = await until(admin, r["id"], lambda x: x["phase"] == 2)
        assert written(r) == ["dev-0", "dev-1", "dev-2", "dev-3"]
        for i, d in enumerate(("dev-1", "dev-2", "dev-3")):
            report(hub, d, r["id"], 7 + i, "healthy")

        # The CLI follows it to the end (exit 0 when it succeeded).
        out, err = io.StringIO(), io.StringIO()
        argv = ["--hub", hub.url, "--api-key", hub.admin_key, "rollout", "status", r["id"]]
        code = await asyncio.to_thread(
            cli.run, [*argv, "--watch", "--watch-timeout", str(WAIT)], out, err
        )
        assert code == 0, err.getvalue()
        assert "[succeeded]" in out.getvalue() and "succeeded 4" in out.getvalue()
        assignments = (await admin.call("assignments.list"))["items"]
        assert [(a["target"], a["version"]) for a in assignments] == [("group:lab", "1.3.0")]
        actions = [n["action"] for n in notices if n["id"] == r["id"]]
        assert actions[0] == "started" and "progress" in actions
        deadline = time.monotonic() + WAIT  # the last notice may trail the CLI's last read
        while not any(n.get("state") == "succeeded" for n in notices):
            assert time.monotonic() < deadline, notices
            await asyncio.sleep(0.1)
    finally:
        await nc.close()


async def test_failure_pauses_then_abort_restores(hub: HubProcess, admin: HubClient) -> None:
    await admin.call("assign", {"target": "device:solo", "bundle": "warehouse-monitor@1.2.0"})
    r = await admin.call("rollouts.start", {"bundle": NEW, "target": "device:solo"})
    await until(admin, r["id"], lambda x: x["phase"] == 1)
    report(hub, "solo", r["id"], 3, "rolled_back")
    r = await until(admin, r["id"], lambda x: x["state"] == "paused")
    assert "more than max-failures 0" in r["reason"]
    assert (r["devices"][0]["state"], r["devices"][0]["reason"]) == (
        "Failed",
        "rolled back: relay unhealthy",
    )
    listed = await admin.call("rollouts.list", {"state": "paused"})
    assert [i["id"] for i in listed["items"]] == [r["id"]]

    out, err = io.StringIO(), io.StringIO()
    argv = ["--hub", hub.url, "--api-key", hub.admin_key, "rollout", "abort", r["id"]]
    assert await asyncio.to_thread(cli.run, argv, out, err) == 0, err.getvalue()
    assert "[aborted]" in out.getvalue() and "restored: solo" in out.getvalue()
    got = await admin.call("devices.get", {"id": "solo"})
    assert got["desired"]["version"] == "1.2.0"
    await expect_error(admin.call("rollouts.resume", {"id": r["id"]}), "conflict", "id")


async def test_pause_resume_and_refusals(hub: HubProcess, admin: HubClient) -> None:
    r = await admin.call("rollouts.start", {"bundle": NEW, "target": "tag:rpi"})
    assert (await admin.call("rollouts.pause", {"id": r["id"]}))["state"] == "paused"
    await expect_error(admin.call("rollouts.pause", {"id": r["id"]}), "conflict", "id")
    assert (await admin.call("rollouts.resume", {"id": r["id"]}))["state"] == "running"
    # one active rollout per device
    await expect_error(
        admin.call("rollouts.start", {"bundle": NEW, "target": "device:dev-1"}),
        "conflict",
        "target",
    )
    bad: list[tuple[dict[str, Any], str, str]] = [
        ({"bundle": NEW, "target": "group:nope"}, "not_found", "target"),
        ({"bundle": "warehouse-monitor@9.0.0", "target": "tag:rpi"}, "not_found", "bundle"),
        ({"bundle": NEW, "target": "tag:rpi", "canary_percent": 150}, "invalid", "canary_percent"),
        ({"bundle": NEW, "target": "tag:rpi", "max_failures": True}, "invalid", "max_failures"),
        ({"bundle": NEW, "target": "tag:rpi", "extra": 1}, "invalid", "extra"),
        ({"target": "tag:rpi"}, "invalid", "bundle"),
    ]
    for body, code, field in bad:
        await expect_error(admin.call("rollouts.start", body), code, field)
    await expect_error(admin.call("rollouts.get", {"id": "ro-00000000"}), "not_found", "id")
    await expect_error(admin.call("rollouts.get", {}), "invalid", "id")

    key = (await admin.call("keys.create", {"name": "viewer", "role": "readonly"}))["key"]
    async with hub.client(key) as ro:
        assert (await ro.call("rollouts.get", {"id": r["id"]}))["id"] == r["id"]
        assert (await ro.call("rollouts.list"))["items"]
        await expect_error(ro.call("rollouts.abort", {"id": r["id"]}), "forbidden")
        await expect_error(
            ro.call("rollouts.start", {"bundle": NEW, "target": "tag:rpi"}), "forbidden"
        )
    async with HubClient(hub.url, "sbk_nope_nope", timeout=10) as nobody:
        await expect_error(nobody.call("rollouts.list"), "unauthorized")
    assert (await admin.call("rollouts.abort", {"id": r["id"]}))["state"] == "aborted"

    out, err = io.StringIO(), io.StringIO()
    argv = ["--hub", hub.url, "--api-key", hub.admin_key, "rollout", "list"]
    assert await asyncio.to_thread(cli.run, argv, out, err) == 0, err.getvalue()
    assert r["id"] in out.getvalue() and "aborted" in out.getvalue()
    out = io.StringIO()
    argv = [*argv[:-1], "start", NEW, "--target", "group:nope", "--json"]
    assert await asyncio.to_thread(cli.run, argv, out, err) == 1
    assert json.loads(out.getvalue())["error"]["code"] == "not_found"
