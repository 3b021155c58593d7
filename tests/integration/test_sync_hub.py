"""The hub side of sync against a real `signalbeam-hub run` (its own nats-server, store,
API), driven over NATS with devices' own credentials: enrollment, ingest exactly-once,
gaps, bad messages, presence, desired KV, device RPC and the device permission set.
One hub for the module; each test uses its own device ids."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.msg import Msg

from agent.sync.downlink import kv_bucket
from agent.sync.errors import EnrollError
from protocol.desired import DesiredState
from protocol.heartbeat import Heartbeat
from protocol.report import MAX_REPORT_BYTES, MSG_ID_HEADER, ReportBatch, ReportRow
from protocol.rpc import RpcRequest, rpc_ok
from protocol.subjects import (
    DESIRED_BUCKET,
    DESIRED_REPUBLISH_DEST,
    DESIRED_REPUBLISH_SRC,
    INBOX_ENROLL,
    JS_DOMAIN,
    REPORT_STREAM,
    desired_prompt,
    heartbeat,
    report,
    rpc,
)
from tests.harness.sync_hub import (
    SyncHub,
    admin_of_hub,
    applied,
    device_nc,
    enroll_device,
    event_rows,
    event_seqs,
    module_hub,
    new_token,
    publish_batch,
)
from tests.harness.wait import eventually
from tui.client import ApiError, HubClient

GRACE = 2


hub = module_hub("synchub", grace=GRACE)
admin = admin_of_hub()


def hub_events(hub: SyncHub, device: str | None, kind: str) -> int:
    if device is None:
        return int(hub.query("SELECT count(*) FROM events WHERE kind = ?", (kind,))[0][0])
    return int(
        hub.query("SELECT count(*) FROM events WHERE device_id = ? AND kind = ?", (device, kind))[
            0
        ][0]
    )


# ------------------------------------------------------------------ JetStream objects


async def test_stream_and_bucket_exist_as_devices_expect(hub: SyncHub) -> None:
    nc = await hub.hub_nc()
    try:
        js = nc.jetstream()
        info = await js.stream_info(REPORT_STREAM)
        assert info.config.subjects == ["sb.dev.*.report"]
        assert info.config.duplicate_window == 7200
        assert (info.config.max_msg_size or 0) >= MAX_REPORT_BYTES + 4096
        kv = await js.stream_info(f"KV_{DESIRED_BUCKET}")
        assert kv.config.allow_direct and (kv.config.max_msgs_per_subject or 0) >= 1
        rp = kv.config.republish
        assert rp is not None and (rp.src, rp.dest, rp.headers_only) == (
            DESIRED_REPUBLISH_SRC,
            DESIRED_REPUBLISH_DEST,
            True,
        )
    finally:
        await nc.close()


# ------------------------------------------------------------------ enrollment


async def test_enrollment_refusals_store_nothing(hub: SyncHub, admin: HubClient) -> None:
    before = {t: hub.query(f"SELECT count(*) FROM {t}")[0][0] for t in ("devices", "events")}
    with pytest.raises(EnrollError) as bad:
        await enroll_device(hub, "sbt_nope_nope", "ref-1")
    assert bad.value.code == "unauthorized"

    tok = await new_token(admin)
    tok_id = tok.split("_")[1]
    conn = sqlite3.connect(hub.data / "hub.db", timeout=10)
    with conn:
        conn.execute(
            "UPDATE enrollment_tokens SET expires_at = '2000-01-01T00:00:00.000Z' WHERE id = ?",
            (tok_id,),
        )
    conn.close()
    with pytest.raises(EnrollError) as expired:
        await enroll_device(hub, tok, "ref-2")
    assert expired.value.code == "forbidden" and "expired" in str(expired.value)

    # A tag the hub cannot name is refused before the token is used.
    tok2 = await new_token(admin)
    with pytest.raises(EnrollError) as badtag:
        await enroll_device(hub, tok2, "ref-3", ("no:colons",))
    assert badtag.value.code == "invalid" and badtag.value.field == "tags[0]"
    assert hub.query("SELECT uses FROM enrollment_tokens WHERE id = ?", (tok2.split("_")[1],)) == [
        (0,)
    ]
    await enroll_device(hub, tok2, "ref-4")
    with pytest.raises(EnrollError) as used:
        await enroll_device(hub, tok2, "ref-5")
    assert used.value.code == "forbidden" and "used up" in str(used.value)

    # Garbage on the enrollment subject gets the error shape, and the hub lives on.
    # The bootstrap login receives replies only under its own prefix (issue 19).
    nc = await nats.connect(hub.enroll_url, inbox_prefix=INBOX_ENROLL)
    try:
        reply = await nc.request("sb.hub.enroll", b"\xff not json", timeout=5)
        assert json.loads(reply.data)["error"]["code"] == "bad_request"
    finally:
        await nc.close()
    after = {t: hub.query(f"SELECT count(*) FROM {t}")[0][0] for t in ("devices", "events")}
    assert after == {"devices": before["devices"] + 1, "events": before["events"] + 1}
    assert hub.query("SELECT id FROM devices WHERE id LIKE 'ref-%'") == [("ref-4",)]


async def test_enrolled_device_has_its_user_and_reenroll_needs_approval(
    hub: SyncHub, admin: HubClient
) -> None:
    tok = await new_token(admin, uses=5)
    creds = await enroll_device(hub, tok, "enr-1", ("lab", "rpi"))
    assert creds.js_domain == JS_DOMAIN and creds.leaf_url.endswith(str(hub.ports["leafnode"]))
    got = await admin.call("devices.get", {"id": "enr-1"})
    assert got["tenant"] == "acme" and got["tags"] == ["lab", "rpi"] and got["hostname"] == "box"
    nc = await device_nc(hub, creds)  # the reload took effect before the reply
    await nc.close()

    with pytest.raises(EnrollError) as again:
        await enroll_device(hub, tok, "enr-1")
    assert again.value.code == "conflict" and "approve" in str(again.value)
    res = await admin.call("devices.approve_reenroll", {"id": "enr-1"})
    assert res["changed"] is True
    creds2 = await enroll_device(hub, tok, "enr-1")
    assert creds2.nats_password != creds.nats_password
    with pytest.raises(Exception):  # noqa: B017 - the old password is gone
        await device_nc(hub, creds, max_reconnect_attempts=0, allow_reconnect=False)
    # The approval is used up by that enrollment.
    with pytest.raises(EnrollError):
        await enroll_device(hub, tok, "enr-1")


# ------------------------------------------------------------------ ingest


async def test_ingest_applies_each_row_once_in_order(hub: SyncHub, admin: HubClient) -> None:
    creds = await enroll_device(hub, await new_token(admin), "ing-1")
    nc = await device_nc(hub, creds)
    js = nc.jetstream(domain=JS_DOMAIN)
    try:
        rows = event_rows(1, 30)
        metric_row = ReportRow(
            31,
            "metrics.1m",
            1.0,
            {"bucket": 1_700_000_040, "metrics": {"cpu.percent": [1, 2, 3, 6]}},
        )
        observed = ReportRow(32, "observed", 1.0, {"containers": [{"name": "web"}], "ts": 5.0})
        ack = await publish_batch(js, ReportBatch("ing-1", (*rows[:10],)))
        assert ack.stream == REPORT_STREAM
        await publish_batch(js, ReportBatch("ing-1", tuple(rows[10:]), prev_seq=10))
        await publish_batch(js, ReportBatch("ing-1", (metric_row, observed), prev_seq=30))
        await eventually(lambda: applied(hub, "ing-1") == 32, what="all applied")
        # Replays: the same batch again (duplicate window: PubAck says duplicate) and an
        # overlapping one under another id (ingest skips rows it has).
        dup = await publish_batch(js, ReportBatch("ing-1", tuple(rows[:10])))
        assert dup.duplicate
        more = event_rows(25, 10, first_event=25)
        await publish_batch(js, ReportBatch("ing-1", tuple(more), prev_seq=24))
        await eventually(lambda: applied(hub, "ing-1") == 34)
        assert event_seqs(hub, "ing-1") == [*range(1, 31), 33, 34]
        got = await admin.call("devices.get", {"id": "ing-1"})
        assert got["reported"]["state"]["observed"]["containers"] == [{"name": "web"}]
        assert got["reported"]["as_of"]
        m = await admin.call("metrics.get", {"device": "ing-1", "since": 0})
        assert m["items"] == [
            {"name": "cpu.percent", "ts": 1_700_000_040, "min": 1.0, "avg": 2.0, "max": 3.0}
        ]
        assert hub.metric("signalbeam_sync_rows_total", outcome="replayed") >= 8
    finally:
        await nc.close()


async def test_out_of_order_batch_waits_and_gaps_are_recorded(
    hub: SyncHub, admin: HubClient
) -> None:
    creds = await enroll_device(hub, await new_token(admin), "ing-2")
    nc = await device_nc(hub, creds)
    js = nc.jetstream(domain=JS_DOMAIN)
    try:
        rows = event_rows(1, 20)
        # The later batch lands first: it must wait for rows 1..10 (nak), not skip them.
        await publish_batch(js, ReportBatch("ing-2", tuple(rows[10:]), prev_seq=10))
        await eventually(lambda: hub.metric("signalbeam_sync_naks_total") > 0, what="nak")
        assert applied(hub, "ing-2") == 0
        await publish_batch(js, ReportBatch("ing-2", tuple(rows[:10])))
        await eventually(lambda: applied(hub, "ing-2") == 20)
        assert event_seqs(hub, "ing-2") == list(range(1, 21))
        # A jump without an ordering claim (prev_seq 0: a new agent session) is a gap.
        await publish_batch(js, ReportBatch("ing-2", tuple(event_rows(26, 2, first_event=21))))
        await eventually(lambda: applied(hub, "ing-2") == 27)
        assert hub_events(hub, "ing-2", "sync_gap") == 1
        gap = hub.query("SELECT data FROM events WHERE device_id = 'ing-2' AND kind = 'sync_gap'")[
            0
        ][0]
        assert json.loads(gap) == {"from": 21, "to": 25}
    finally:
        await nc.close()


async def test_bad_messages_are_dropped_counted_and_recorded(
    hub: SyncHub, admin: HubClient
) -> None:
    creds = await enroll_device(hub, await new_token(admin), "bad-1")
    nc = await device_nc(hub, creds)
    js = nc.jetstream(domain=JS_DOMAIN)
    subj = report("bad-1")
    before = hub.metric("signalbeam_sync_bad_messages_total", kind="report")
    good = ReportBatch("bad-1", tuple(event_rows(1, 1)))
    forged = ReportBatch("ing-1", tuple(event_rows(1, 1)))
    big = ReportBatch("bad-1", (ReportRow(1, "event", 1.0, {"pad": "x" * MAX_REPORT_BYTES}),))
    cases: list[tuple[bytes, dict[str, str]]] = [
        # Distinct ids: the stream's duplicate window would drop a repeat before the hub.
        (b"not json at all", {MSG_ID_HEADER: "bad-1:101-101"}),
        (b'{"v": 99}', {MSG_ID_HEADER: "bad-1:102-102"}),
        (b"[1, 2, 3]", {MSG_ID_HEADER: "bad-1:103-103"}),
        (forged.to_json(), {MSG_ID_HEADER: "ing-1:1-1"}),  # forged id inside A's subject
        (good.to_json(), {MSG_ID_HEADER: "bad-1:7-9"}),  # header and body disagree
        (good.to_json(), {MSG_ID_HEADER: "ing-1:5-5"}),  # another device's id on our batch
        (big.to_json()[: MAX_REPORT_BYTES + 1024], {MSG_ID_HEADER: "bad-1:104-104"}),
    ]
    try:
        for data, headers in cases:
            await js.publish(subj, data, headers=headers or None)
        # A malformed row inside a valid batch is skipped; its seq is consumed.
        mixed = ReportBatch(
            "bad-1",
            (
                *event_rows(1, 1),
                ReportRow(2, "metrics.1m", 1.0, "not an object"),
                *event_rows(3, 1, first_event=2),
            ),
        )
        await publish_batch(js, mixed)
        await eventually(lambda: applied(hub, "bad-1") == 3, what="good batch applied")
        await eventually(
            lambda: (
                hub.metric("signalbeam_sync_bad_messages_total", kind="report")
                >= before + len(cases)
            ),
            what="bad counted",
        )
        assert event_seqs(hub, "bad-1") == [1, 2]
        assert hub_events(hub, "bad-1", "bad_rows") == 1
        assert hub_events(hub, "bad-1", "bad_message") >= 1  # rate-limited per device
        assert event_seqs(hub, "ing-1")[:1] == [1]  # the forged row changed nothing there
        # Garbage heartbeats too; the hub answers the API all along.
        await nc.publish(heartbeat("bad-1"), b"\x00\x01")
        await nc.publish(heartbeat("bad-1"), Heartbeat("ing-1", 1.0, "0.1").to_json())
        await eventually(
            lambda: hub.metric("signalbeam_sync_bad_messages_total", kind="heartbeat") >= 2
        )
        assert hub.http("/health/ready")[0] == 200
        await admin.call("devices.list")
    finally:
        await nc.close()


# ------------------------------------------------------------------ presence


async def test_heartbeats_drive_online_offline_and_last_seen(
    hub: SyncHub, admin: HubClient
) -> None:
    creds = await enroll_device(hub, await new_token(admin), "hb-1")
    nc = await device_nc(hub, creds)
    notices: list[dict[str, Any]] = []
    watcher = await hub.hub_nc()

    async def on_notice(msg: Msg) -> None:
        notices.append(json.loads(msg.data))

    await watcher.subscribe("sb.fleet.changes.devices", cb=on_notice)
    try:
        hb = Heartbeat(
            "hb-1",
            1.0,
            "0.2.0",
            bundle_ref="app@1.0.0",
            generation=3,
            containers_total=2,
            containers_running=2,
            metrics={"cpu.percent": 5.0},
            last_seq=10,
        )
        # The hub answers a heartbeat sent as a request: the device's end-to-end "online".
        reply = await nc.request(heartbeat("hb-1"), hb.to_json(), timeout=10)
        assert json.loads(reply.data) == {"v": 1}
        bad = await nc.request(heartbeat("hb-1"), b'{"v":1}', timeout=10)
        assert json.loads(bad.data)["error"]["code"] == "invalid"

        async def status() -> str:
            return str((await admin.call("devices.get", {"id": "hb-1"}))["status"])

        await eventually(lambda: _is(status(), "online"), what="online")
        got = await admin.call("devices.get", {"id": "hb-1"})
        assert got["last_seen"] and got["agent_version"] == "0.2.0"
        assert got["heartbeat"]["state"]["bundle_ref"] == "app@1.0.0"
        assert got["heartbeat"]["as_of"] == got["last_seen"]
        assert got["sync_behind"] == 10  # last_seq 10 in the heartbeat, nothing applied yet
        # ... as of that heartbeat, and it says so.
        assert got["sync_behind_as_of"] == got["heartbeat"]["as_of"]
        # No more heartbeats: offline after the grace, with an event and a notice.
        await eventually(lambda: _is(status(), "offline"), timeout=GRACE * 10, what="offline")
        assert hub_events(hub, "hb-1", "online") == 1
        assert hub_events(hub, "hb-1", "offline") == 1
        await eventually(lambda: any(n["action"] == "offline" for n in notices))
        assert any(n["action"] == "online" and "hb-1" in n["devices"] for n in notices)
    finally:
        await nc.close()
        await watcher.close()


async def _is(coro: Any, want: str) -> bool:
    return bool(await coro == want)


# ------------------------------------------------------------------ desired, RPC, security


async def test_desired_kv_and_device_permissions(hub: SyncHub, admin: HubClient) -> None:
    tok = await new_token(admin, uses=2)
    a = await enroll_device(hub, tok, "sec-a")
    await enroll_device(hub, tok, "sec-b")
    spec = {
        "bundle": "app",
        "version": "1.0.0",
        "containers": [{"name": "web", "image": "registry.local/web:1.0"}],
    }
    await admin.call("bundles.push", {"spec": spec})
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await device_nc(hub, a, error_cb=on_error)
    try:
        kv = kv_bucket(nc.jetstream(domain=JS_DOMAIN))

        async def generation() -> int:
            got = await admin.call("devices.get", {"id": "sec-a"})
            return int(got["desired_generation"] or 0)

        prompts: list[str] = []

        async def on_prompt(msg: Msg) -> None:
            prompts.append(msg.subject)

        await nc.subscribe(desired_prompt("sec-a"), cb=on_prompt)
        await nc.flush()
        await admin.call("assign", {"target": "device:sec-a", "bundle": "app@1.0.0"})
        await eventually(lambda: _gt(generation(), 0), what="desired written")
        await eventually(lambda: prompts == ["sb.desired.sec-a"], what="prompted")
        entry = await kv.get("sec-a")  # own key: a direct get, allowed
        doc = DesiredState.from_json(entry.value or b"")
        assert doc.spec is not None and (doc.spec["bundle"], doc.spec["version"]) == (
            "app",
            "1.0.0",
        )
        assert doc.content_hash
        # The hub records the generation just after its put returns: wait for that write.
        await eventually(lambda: _eq(generation(), entry.revision), what="generation recorded")
        # B's key: no answer for A (the direct get of another key is not permitted).
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError, TimeoutError)):
            await asyncio.wait_for(kv.get("sec-b"), 2)
        # B's subjects: publishing as B never reaches the stream.
        js = nc.jetstream(domain=JS_DOMAIN, timeout=1)
        with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
            await publish_batch(js, ReportBatch("sec-b", tuple(event_rows(1, 1))))
        # Answering B's RPC: A cannot even subscribe to it.
        await nc.subscribe(rpc("sec-b", "status"))
        await nc.flush()
        await eventually(lambda: any("permissions violation" in str(e).lower() for e in errors))
        assert applied(hub, "sec-b") == 0
    finally:
        await nc.close()


async def _gt(coro: Any, n: int) -> bool:
    return bool(await coro > n)


async def _eq(coro: Any, n: int) -> bool:
    return bool(await coro == n)


async def test_device_rpc_via_the_api(hub: SyncHub, admin: HubClient) -> None:
    creds = await enroll_device(hub, await new_token(admin), "rpc-1")
    with pytest.raises(ApiError) as off:
        await admin.call("devices.logs", {"id": "rpc-1", "container": "web"})
    assert off.value.code == "device_offline" and "last seen never" in off.value.message
    with pytest.raises(ApiError) as missing:
        await admin.call("devices.reconcile", {"id": "nope-1"})
    assert missing.value.code == "not_found"
    with pytest.raises(ApiError) as badname:
        await admin.call("devices.logs", {"id": "rpc-1", "container": "../etc"})
    assert badname.value.code == "invalid" and badname.value.field == "container"

    nc = await device_nc(hub, creds)
    seen: list[tuple[str, bytes]] = []

    async def serve(msg: Msg) -> None:
        seen.append((msg.subject, msg.data))
        verb = msg.subject.rsplit(".", 1)[1]
        if verb == "restart":
            await msg.respond(
                b'{"v":1,"error":{"code":"not_found","message":"no container x","field":"container"}}'
            )
        else:
            await msg.respond(rpc_ok({"container": "web", "lines": ["a", "b"], "truncated": False}))

    await nc.subscribe(rpc("rpc-1", "*"), cb=serve)
    await nc.flush()
    try:
        res = await admin.call("devices.logs", {"id": "rpc-1", "container": "web", "tail": 2})
        assert res["result"]["lines"] == ["a", "b"]
        assert json.loads(seen[-1][1]) == json.loads(RpcRequest("logs", "web", 2).to_json())
        with pytest.raises(ApiError) as remote:
            await admin.call("devices.restart", {"id": "rpc-1", "container": "x"})
        assert remote.value.code == "not_found" and remote.value.field == "container"
    finally:
        await nc.close()


async def test_decommission_revokes_the_device_user(hub: SyncHub, admin: HubClient) -> None:
    creds = await enroll_device(hub, await new_token(admin), "dec-1")
    nc = await device_nc(hub, creds)
    await nc.close()
    await admin.call("devices.decommission", {"id": "dec-1"})
    await eventually(
        lambda: (
            hub.query(
                "SELECT count(*) FROM device_credentials c JOIN devices d"
                " ON d.id = c.device_id WHERE d.id = 'dec-1' AND d.decommissioned = 1"
            )
            == [(1,)]
        )
    )

    async def refused() -> bool:
        try:
            c = await device_nc(hub, creds, max_reconnect_attempts=0, allow_reconnect=False)
        except Exception:
            return True
        await c.close()
        return False

    await eventually(refused, what="old credentials refused")
    # Decommissioned: it may enroll again with a token.
    await enroll_device(hub, await new_token(admin), "dec-1")
