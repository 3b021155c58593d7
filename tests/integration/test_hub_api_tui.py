"""The hub API additions the operator TUI consumes, end to end on a real `signalbeam-hub
run` over real NATS: ``session.whoami``, the ``devices.list`` summary view fed by real
ingest and presence, the coalesced ``devices``/``updated`` notices, and dry runs."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from nats.aio.msg import Msg

from hub import __version__
from protocol.heartbeat import Heartbeat
from protocol.report import ReportBatch, ReportRow
from protocol.subjects import JS_DOMAIN, heartbeat
from tests.harness.sync_hub import (
    SyncHub,
    admin_of_hub,
    device_nc,
    enroll_device,
    module_hub,
    new_token,
    publish_batch,
)
from tests.harness.wait import eventually
from tests.integration.test_hub_api import spec
from tui.client import ApiError, HubClient

GRACE = 3


hub = module_hub("hubtui", grace=GRACE)
admin = admin_of_hub()


async def test_whoami_for_admin_and_readonly_keys(hub: SyncHub, admin: HubClient) -> None:
    me = await admin.call("session.whoami")
    assert me["role"] == "admin" and me["hub_version"] == __version__
    assert me["key_id"] and me["name"]
    created = await admin.call("keys.create", {"name": "viewer", "role": "readonly"})
    async with hub.client(created["key"]) as ro:
        assert await ro.call("session.whoami") == {
            "key_id": created["id"],
            "name": "viewer",
            "role": "readonly",
            "hub_version": __version__,
        }


async def test_reports_and_presence_feed_the_summary_and_device_notices(
    hub: SyncHub, admin: HubClient
) -> None:
    pushed = await admin.call("bundles.push", {"spec": spec("1.3.0")})
    ref = f"{pushed['bundle']}@{pushed['version']}"
    creds = await enroll_device(hub, await new_token(admin), "tui-1")
    nc = await device_nc(hub, creds)
    js = nc.jetstream(domain=JS_DOMAIN)
    notices: list[dict[str, Any]] = []
    watcher = await hub.hub_nc()

    async def on_notice(msg: Msg) -> None:
        notices.append(json.loads(msg.data))

    def updated(device: str) -> list[dict[str, Any]]:
        return [
            n
            for n in notices
            if n["action"] == "updated" and (n["ids"] is None or device in n["ids"])
        ]

    await watcher.subscribe("sb.fleet.changes.devices", cb=on_notice)
    try:
        now = time.time()
        minute = int(now) // 60 * 60
        rows = (
            ReportRow(
                1,
                "deployment",
                now,
                {
                    "generation": 1,
                    "bundle_ref": ref,
                    "status": "healthy",
                    "reason": "",
                    "started_at": now,
                    "finished_at": now,
                },
            ),
            ReportRow(
                2,
                "observed",
                now,
                {
                    "ts": now,
                    "containers": [
                        {"name": "web", "state": "running", "health": "healthy"},
                        {"name": "db", "state": "exited"},
                    ],
                },
            ),
            ReportRow(
                3,
                "metrics.1m",
                now,
                {
                    "bucket": minute,
                    "metrics": {"cpu.percent": [1, 7.5, 9, 6], "mem.percent": [40, 41, 42, 6]},
                },
            ),
        )
        await publish_batch(js, ReportBatch("tui-1", rows))
        await eventually(lambda: bool(updated("tui-1")), what="devices/updated after ingest")
        n = updated("tui-1")[0]
        assert n["kind"] == "devices" and n["ts"]

        page = await admin.call("devices.list", {"view": "summary", "running": ref})
        assert [d["id"] for d in page["items"]] == ["tui-1"]
        d = page["items"][0]
        assert d["running"] == ref
        assert d["deployment"].pop("as_of")  # when the verdict was reported
        assert d["deployment"] == {"status": "healthy", "error": None}
        assert d["containers"].pop("as_of")  # when the snapshot was taken
        assert d["containers"] == {"total": 2, "bad": 1}
        assert d["rollout"] is None and d["desired"] is None
        assert d["metrics"]["cpu"]["last"] == 7.5 and d["metrics"]["cpu"]["spark"][-1] == 7.5
        assert d["metrics"]["mem"]["last"] == 41.0 and d["metrics"]["disk"] is None
        other = await admin.call("devices.list", {"view": "summary", "running": "other-app"})
        assert other["items"] == []

        # Presence: online (heartbeat), then offline after the grace, each a notice.
        before = len(updated("tui-1"))
        hb = Heartbeat("tui-1", now, "0.1.0", bundle_ref=ref, generation=1)
        await nc.publish(heartbeat("tui-1"), hb.to_json())
        await nc.flush()
        await eventually(lambda: len(updated("tui-1")) > before, what="updated on online")
        before = len(updated("tui-1"))
        await eventually(
            lambda: len(updated("tui-1")) > before, timeout=GRACE * 10, what="updated on offline"
        )
        assert any(n["action"] == "offline" and "tui-1" in n["devices"] for n in notices)
    finally:
        await nc.close()
        await watcher.close()


async def test_summary_limit_is_capped(admin: HubClient) -> None:
    with pytest.raises(ApiError) as exc:
        await admin.call("devices.list", {"view": "summary", "limit": 501})
    assert exc.value.code == "invalid" and exc.value.field == "limit"


async def test_ids_filter_over_nats(hub: SyncHub, admin: HubClient) -> None:
    tok = await new_token(admin, uses=3)
    for i in range(3):
        await enroll_device(hub, tok, f"ids-{i}", tags=("ids",))
    page = await admin.call(
        "devices.list", {"view": "summary", "ids": ["ids-2", "ids-0", "no-such-device"]}
    )
    assert [d["id"] for d in page["items"]] == ["ids-0", "ids-2"]
    assert all("metrics" in d and "rollout" in d for d in page["items"])
    with pytest.raises(ApiError) as exc:
        await admin.call("devices.list", {"ids": ["ids-0", "BAD ID"]})
    assert exc.value.code == "invalid" and exc.value.field == "ids[1]"
    with pytest.raises(ApiError) as exc:
        await admin.call("devices.list", {"ids": [f"d-{i}" for i in range(501)]})
    assert exc.value.code == "invalid" and exc.value.field == "ids"


async def test_dry_runs_over_nats_for_a_readonly_key(hub: SyncHub, admin: HubClient) -> None:
    pushed = await admin.call("bundles.push", {"spec": spec("1.3.0")})
    ref = f"{pushed['bundle']}@{pushed['version']}"
    tok = await new_token(admin, uses=3)
    for i in range(3):
        await enroll_device(hub, tok, f"dry-{i}", tags=("dry",))
    created = await admin.call("keys.create", {"name": "dry-viewer", "role": "readonly"})
    before = hub.query("SELECT count(*) FROM events")[0][0]
    async with hub.client(created["key"]) as ro:
        body = {"target": "tag:dry", "bundle": ref, "dry_run": True}
        want = {"dry_run": True, "devices": 3, "sample": ["dry-0", "dry-1", "dry-2"]}
        assert await ro.call("assign", body) == want
        assert await ro.call("rollouts.start", body) == want
        with pytest.raises(ApiError) as exc:
            await ro.call("assign", {**body, "dry_run": False})
        assert exc.value.code == "forbidden"
    assert hub.query("SELECT count(*) FROM events")[0][0] == before
    assert hub.query("SELECT count(*) FROM assignments")[0][0] == 0
    assert hub.query("SELECT count(*) FROM rollouts")[0][0] == 0
