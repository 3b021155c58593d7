"""Attacks and faults on the device -> hub report path, against a real `signalbeam-hub run`
(its generated nats-server config and device users), raw nats-py clients holding a
device's own credentials, and the agent's real sync stack (``SyncService`` in direct mode
over its real SQLite store: uplink, heartbeat, downlink) where the agent's behaviour is the
point (issue 19, items 1, 5, 6 and 7).

One hub for the module; each test uses its own device ids.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from agent.store import Store
from agent.sync.downlink import DownlinkSettings
from agent.sync.service import SyncService, SyncSettings
from agent.sync.uplink import UplinkSettings
from protocol.enroll import EnrollReply
from protocol.heartbeat import Heartbeat
from protocol.report import MSG_ID_HEADER, ReportBatch, ReportRow
from protocol.subjects import JS_DOMAIN, REPORT_STREAM, heartbeat, report
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
from tui.client import HubClient

# The default of new hubs: nats-server in operator mode, device JWTs (issue 16).
hub = module_hub("integrity", init_flags=["--nats-auth", "jwt"])
admin = admin_of_hub()


def hub_events(hub: SyncHub, device: str, kind: str) -> list[dict[str, Any]]:
    return [
        json.loads(r[0])
        for r in hub.query(
            "SELECT data FROM events WHERE device_id = ? AND kind = ? ORDER BY id", (device, kind)
        )
    ]


@asynccontextmanager
async def agent(hub: SyncHub, creds: EnrollReply, store: Store) -> AsyncIterator[SyncService]:
    """The agent's sync stack, connected straight to the hub with the device's credentials
    (direct mode: what its leaf does on its behalf), heartbeats every 0.5 s."""
    settings = SyncSettings(
        "direct",
        url=f"nats://127.0.0.1:{hub.port}",
        credentials=creds,
        heartbeat_interval=0.5,
        uplink=UplinkSettings(idle_poll=0.1, backoff_max=1.0, ack_timeout=5.0),
        downlink=DownlinkSettings(offline_probe=0.3),
    )
    svc = SyncService(store, settings, creds.device_id, trigger=lambda: None)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


def wipe(path: Path) -> None:
    """The agent's database deleted (its WAL and shared memory with it)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def record(store: Store, n: int, tag: str) -> None:
    for i in range(n):
        store.event("test.tick", f"{tag} {i}", data={"i": i})


# ------------------------------------------------------------------ item 1


async def test_a_device_cannot_erase_another_devices_rows_with_forged_msg_ids(
    hub: SyncHub, admin: HubClient, tmp_path: Path
) -> None:
    """Device A publishes, on its own subject, every id device B's agent would give its
    next batches (``B:<first>-<last>``). B's rows must all reach the hub anyway."""
    tok = await new_token(admin, uses=2)
    a = await enroll_device(hub, tok, "atk-a")
    b = await enroll_device(hub, tok, "vic-b")
    nc_a = await device_nc(hub, a)
    try:
        js_a = nc_a.jetstream(domain=JS_DOMAIN)
        body = ReportBatch("atk-a", tuple(event_rows(1, 1))).to_json()
        for last in range(1, 41):
            ack = await js_a.publish(
                report("atk-a"), body, headers={MSG_ID_HEADER: f"vic-b:1-{last}"}
            )
            assert not ack.duplicate  # stored: the stream takes any id on A's subject
        store = Store.open(tmp_path / "b.db", device_id="vic-b")
        try:
            record(store, 5, "real")
            async with agent(hub, b, store):
                await eventually(
                    lambda: (
                        store.outbox_depth() == 0
                        and applied(hub, "vic-b") == store.outbox_stats()["last_seq"]
                    ),
                    timeout=60,
                    what="B's rows sent and applied",
                )
            assert event_seqs(hub, "vic-b") == [1, 2, 3, 4, 5]
        finally:
            store.close()
        # A's forgeries never counted for anyone: refused as A's bad messages.
        await eventually(
            lambda: bool(hub_events(hub, "atk-a", "bad_message")), timeout=30, what="A flagged"
        )
        assert hub_events(hub, "vic-b", "sync_lost") == []
    finally:
        await nc_a.close()


async def test_rows_swallowed_by_the_stream_are_detected_as_lost(
    hub: SyncHub, admin: HubClient
) -> None:
    """An older agent sent predictable ids and trusted a "duplicate" PubAck. When its
    heartbeat says every row up to N reached the stream but the hub never got them, the hub
    raises it: a ``sync_lost`` event and ``signalbeam_sync_lost_rows_total``."""
    tok = await new_token(admin, uses=2)
    a = await enroll_device(hub, tok, "atk-c")
    b = await enroll_device(hub, tok, "old-d")
    nc_a, nc_b = await device_nc(hub, a), await device_nc(hub, b)
    try:
        js_a = nc_a.jetstream(domain=JS_DOMAIN)
        js_b = nc_b.jetstream(domain=JS_DOMAIN)
        await publish_batch(js_b, ReportBatch("old-d", tuple(event_rows(1, 3))))
        await eventually(lambda: applied(hub, "old-d") == 3, timeout=30, what="first batch")
        lost_before = hub.metric("signalbeam_sync_lost_rows_total")
        forged = ReportBatch("atk-c", tuple(event_rows(1, 1))).to_json()
        await js_a.publish(report("atk-c"), forged, headers={MSG_ID_HEADER: "old-d:4-8"})
        swallowed = ReportBatch("old-d", tuple(event_rows(4, 5, first_event=4)), prev_seq=3)
        ack = await publish_batch(js_b, swallowed)
        assert ack.duplicate  # what the older agent took as delivered
        hb = Heartbeat("old-d", time.time(), "0.0.9", last_seq=8, outbox_pending=0)
        await nc_b.publish(heartbeat("old-d"), hb.to_json())
        await eventually(
            lambda: bool(hub_events(hub, "old-d", "sync_lost")), timeout=30, what="loss raised"
        )
        assert hub_events(hub, "old-d", "sync_lost")[0] | {"epoch": ""} == {
            "from": 4,
            "to": 8,
            "epoch": "",
        }
        assert hub.metric("signalbeam_sync_lost_rows_total") >= lost_before + 5
        # Said once per claim, however many heartbeats repeat it.
        for _ in range(3):
            await nc_b.publish(heartbeat("old-d"), hb.to_json())
        await nc_b.flush()
        ok = Heartbeat("old-d", time.time(), "0.0.9", last_seq=3, outbox_pending=0)
        await nc_b.publish(heartbeat("old-d"), ok.to_json())
        await eventually(
            lambda: (
                hub.query(
                    "SELECT json_extract(doc, '$.last_seq') FROM device_heartbeats"
                    " WHERE device_id = 'old-d'"
                )
                == [(3,)]
            ),
            timeout=30,
            what="later heartbeat stored",
        )
        assert len(hub_events(hub, "old-d", "sync_lost")) == 1
    finally:
        await nc_a.close()
        await nc_b.close()


# ------------------------------------------------------------------ item 5


async def test_an_agent_whose_database_was_deleted_is_applied_not_dropped(
    hub: SyncHub, admin: HubClient, tmp_path: Path
) -> None:
    creds = await enroll_device(hub, await new_token(admin), "wipe-e")
    path = tmp_path / "e.db"
    store = Store.open(path, device_id="wipe-e")
    record(store, 10, "before")
    async with agent(hub, creds, store):
        await eventually(
            lambda: len(event_seqs(hub, "wipe-e")) == 10, timeout=60, what="first store applied"
        )
        # Its events and whatever else the agent wrote (the desired row, whenever it
        # arrives): all sent and applied, read together each time.
        await eventually(
            lambda: (
                store.outbox_depth() == 0
                and applied(hub, "wipe-e") == store.outbox_stats()["last_seq"]
            ),
            timeout=60,
            what="first store sent and applied",
        )
    first_last = applied(hub, "wipe-e")
    store.close()
    wipe(path)

    store = Store.open(path, device_id="wipe-e")  # a new store: numbering from 1 again
    try:
        record(store, 3, "after")
        assert [r.seq for r in store.outbox_pending(10)] == [1, 2, 3]
        async with agent(hub, creds, store):
            await eventually(
                lambda: len(event_seqs(hub, "wipe-e")) == 13, timeout=60, what="new rows applied"
            )
        assert event_seqs(hub, "wipe-e") == [*range(1, 11), 1, 2, 3]
        msgs = [
            r[0]
            for r in hub.query(
                "SELECT message FROM events WHERE device_id = 'wipe-e' AND kind = 'test.tick'"
                " ORDER BY id"
            )
        ]
        assert msgs[-3:] == ["after 0", "after 1", "after 2"]
        (reset,) = hub_events(hub, "wipe-e", "store_reset")
        assert reset["previous_last_applied"] == first_last
        assert reset["epoch"] == store.outbox_epoch()
        assert hub.query("SELECT epoch FROM device_sync WHERE device_id = 'wipe-e'") == [
            (store.outbox_epoch(),)
        ]
        assert hub.metric("signalbeam_sync_store_resets_total") >= 1
    finally:
        store.close()


# ------------------------------------------------------------------ item 6


def poison_batches(device: str) -> list[bytes]:
    """Eight reports whose values overflowed inside the hub's ingest transaction."""
    now = time.time()
    ev: dict[str, Any] = {"kind": "x", "severity": "info", "message": "m", "ts": now, "seq": 1}
    bad_payloads: list[tuple[str, Any]] = [
        ("event", {**ev, "ts": 1e300}),
        ("event", {**ev, "ts": -1e20}),
        ("event", {**ev, "seq": 10**30}),
        ("metrics.1m", {"bucket": 10**30, "metrics": {"cpu.percent": [1, 2, 3, 4]}}),
        ("observed", {"containers": [], "ts": 1e300}),
    ]
    out = []
    seq = 0
    for kind, payload in bad_payloads:
        seq += 1
        out.append(ReportBatch(device, (ReportRow(seq, kind, now, payload),), seq - 1).to_json())
    # Envelope values out of range: refused whole at decode.
    raw = ReportBatch(device, (ReportRow(seq + 1, "event", now, ev),), seq).to_json()
    out.append(raw.replace(f'"ts":{now!r}'.encode(), b'"ts":1e300', 1))
    out.append(raw.replace(f'"ts":{now!r}'.encode(), b'"ts":-1e20', 1))
    out.append(raw.replace(f'{{"seq":{seq + 1},'.encode(), b'{"seq":' + b"9" * 30 + b",", 1))
    return out


async def test_one_devices_poison_rows_do_not_stall_anyone(hub: SyncHub, admin: HubClient) -> None:
    tok = await new_token(admin, uses=2)
    bad = await enroll_device(hub, tok, "poison-p")
    good = await enroll_device(hub, tok, "good-g")
    nc_p, nc_g = await device_nc(hub, bad), await device_nc(hub, good)
    try:
        js_p = nc_p.jetstream(domain=JS_DOMAIN)
        js_g = nc_g.jetstream(domain=JS_DOMAIN)
        bad_before = hub.metric("signalbeam_sync_bad_messages_total", kind="report")
        for body in poison_batches("poison-p"):
            await js_p.publish(report("poison-p"), body)
        # Another device's reports, interleaved with and after the poison.
        prev = 0
        for i in range(50):
            b = ReportBatch("good-g", tuple(event_rows(i * 2 + 1, 2)), prev_seq=prev)
            await publish_batch(js_g, b)
            prev = b.last_seq
        await eventually(
            lambda: applied(hub, "good-g") == 100, timeout=60, what="every good row applied"
        )
        assert event_seqs(hub, "good-g") == list(range(1, 101))
        # The poison device: bad rows skipped (their seqs consumed) and recorded as its own.
        await eventually(
            lambda: applied(hub, "poison-p") == 5, timeout=60, what="poison rows consumed"
        )
        assert hub_events(hub, "poison-p", "bad_rows")
        await eventually(
            lambda: (
                hub.metric("signalbeam_sync_bad_messages_total", kind="report") >= bad_before + 3
            ),
            timeout=30,
            what="bad messages counted",
        )
        assert hub.metric("signalbeam_sync_rows_total", outcome="skipped") >= 5
        assert hub.metric("signalbeam_sync_ingest_failures_total") == 0
        assert hub.query("SELECT count(*) FROM events WHERE ts > '2101'") == [(0,)]
        assert hub.http("/health/ready")[0] == 200
        # Nothing is left redelivering forever: every message was settled.
        hub_nc = await hub.hub_nc()
        try:
            js = hub_nc.jetstream()

            async def settled() -> bool:
                info = await js.consumer_info(REPORT_STREAM, "hub-ingest")
                return info.num_pending == 0 and info.num_ack_pending == 0

            await eventually(settled, timeout=60, what="every report settled")
        finally:
            await hub_nc.close()
        # And the poison device's own later valid rows still arrive.
        await publish_batch(
            js_p, ReportBatch("poison-p", tuple(event_rows(9, 2, first_event=9)), prev_seq=5)
        )
        await eventually(
            lambda: applied(hub, "poison-p") == 10, timeout=60, what="poison device recovers"
        )
    finally:
        await nc_p.close()
        await nc_g.close()


def ready(hub: SyncHub) -> tuple[int, str]:
    """``/health/ready`` with a long timeout: while the store is locked the readiness probe
    queues on the store thread behind a write waiting out SQLite's busy timeout."""
    url = f"http://127.0.0.1:{hub.ports['http']}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_ingest_that_cannot_commit_says_so_in_readiness(
    hub: SyncHub, admin: HubClient
) -> None:
    """The store failing (here: another process holds SQLite's write lock, so every ingest
    transaction fails with "database is locked", as a full disk would) makes
    ``/health/ready`` answer 503 naming ingest, and it recovers once the store does."""
    creds = await enroll_device(hub, await new_token(admin), "lock-l")
    nc = await device_nc(hub, creds)
    js = nc.jetstream(domain=JS_DOMAIN)
    blocker = sqlite3.connect(hub.data / "hub.db", timeout=30, isolation_level=None)
    try:
        await publish_batch(js, ReportBatch("lock-l", tuple(event_rows(1, 2))))
        await eventually(
            lambda: applied(hub, "lock-l") == 2, timeout=30, what="applied before the fault"
        )
        blocker.execute("BEGIN IMMEDIATE")
        await publish_batch(js, ReportBatch("lock-l", tuple(event_rows(3, 2)), prev_seq=2))

        async def stuck() -> bool:
            code, body = await asyncio.to_thread(ready, hub)
            return code == 503 and "report ingest stuck" in body

        await eventually(stuck, timeout=180, what="readiness says ingest is stuck")
        blocker.execute("ROLLBACK")

        async def recovered() -> bool:
            return (await asyncio.to_thread(ready, hub))[0] == 200

        await eventually(recovered, timeout=120, what="ready again")
        await eventually(
            lambda: applied(hub, "lock-l") == 4, timeout=60, what="applied after the fault"
        )
        assert hub.metric("signalbeam_sync_ingest_failures_total") >= 2
    finally:
        if blocker.in_transaction:
            blocker.execute("ROLLBACK")
        blocker.close()
        await nc.close()


# ------------------------------------------------------------------ item 7


async def test_a_sequence_jump_does_not_blind_the_device(hub: SyncHub, admin: HubClient) -> None:
    creds = await enroll_device(hub, await new_token(admin), "jump-j")
    nc = await device_nc(hub, creds)
    try:
        js = nc.jetstream(domain=JS_DOMAIN)
        await publish_batch(js, ReportBatch("jump-j", tuple(event_rows(1, 3))))
        await eventually(lambda: applied(hub, "jump-j") == 3, timeout=30, what="first rows")
        hb = Heartbeat("jump-j", time.time(), "0.1.0", last_seq=5, outbox_pending=2)
        await nc.publish(heartbeat("jump-j"), hb.to_json())
        far = ReportRow(2**63 - 1, "event", time.time(), event_rows(4, 1)[0].payload)
        await publish_batch(js, ReportBatch("jump-j", (far,), prev_seq=3))
        # The device's real next rows: applied, not taken for replays of the jump.
        await publish_batch(
            js, ReportBatch("jump-j", tuple(event_rows(4, 2, first_event=4)), prev_seq=3)
        )
        await eventually(lambda: applied(hub, "jump-j") == 5, timeout=30, what="real rows applied")
        assert event_seqs(hub, "jump-j") == [1, 2, 3, 4, 5]
        # Refused once it waited (~60 s of redeliveries) for a heartbeat explaining it.
        await eventually(
            lambda: bool(hub_events(hub, "jump-j", "sync_seq_jump")),
            timeout=240,
            what="jump refused",
        )
        assert applied(hub, "jump-j") == 5
        assert hub.metric("signalbeam_sync_bad_messages_total", code="seq_jump") >= 1
        await publish_batch(
            js, ReportBatch("jump-j", tuple(event_rows(6, 1, first_event=6)), prev_seq=5)
        )
        await eventually(lambda: applied(hub, "jump-j") == 6, timeout=30, what="still not blinded")
    finally:
        await nc.close()
