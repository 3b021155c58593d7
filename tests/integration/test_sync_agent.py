"""Agent sync against a real hub nats-server and the agent's own supervised leaf server.

The hub here is configured the way the contract in docs/sync.md says (device users with
least-privilege permissions, SB_REPORTS stream, ``desired`` KV with direct get); the test
plays the hub process's role with a small pull consumer that applies rows idempotently by
per-device sequence, like the real ingest must.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.js.api import KeyValueConfig, RePublish, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from agent.store import Store
from agent.sync.downlink import DownlinkSettings
from agent.sync.rpc import RpcHandlers
from agent.sync.service import SyncService, SyncSettings
from agent.sync.uplink import UplinkSettings
from hub.sync.apply_plan import plan_apply
from protocol.desired import DesiredState
from protocol.enroll import EnrollReply
from protocol.heartbeat import decode_heartbeat
from protocol.report import MSG_ID_HEADER, check_msg_id, decode_report
from protocol.rpc import RpcRequest, decode_rpc_reply
from protocol.subjects import (
    DESIRED_BUCKET,
    DESIRED_REPUBLISH_DEST,
    DESIRED_REPUBLISH_SRC,
    REPORT_STREAM,
    REPORT_WILDCARD,
    rpc,
)
from tests.harness.nats import NatsHub
from tests.harness.procs import pids_with_arg
from tests.harness.proxy import TcpProxy
from tests.harness.wait import eventually

HUB_PW = "hub-secret"


def device_user(dev: str, pw: str) -> str:
    # The permission set docs/sync.md asks the hub to give each device (hub's perspective:
    # publish = what the device may send in, subscribe = what the hub may deliver to it).
    # "_INBOX.>" on publish: RPC replies go to the requester's inbox, and allow_responses is
    # not honoured across a leafnode link (RPC replies never arrived with it alone).
    return f"""{{ user: "{dev}", password: "{pw}", permissions: {{
        publish: {{ allow: ["sb.dev.{dev}.>", "_INBOX.>", "$JS.hub.API.DIRECT.GET.KV_desired.$KV.desired.{dev}"] }},
        subscribe: {{ allow: ["_INBOX.{dev}.>", "sb.desired.{dev}", "sb.dev.{dev}.rpc.>"] }} }} }}"""


ACCOUNTS = f"""
accounts {{
  SB {{
    jetstream: enabled
    users: [
      {{ user: hub, password: "{HUB_PW}" }}
      {device_user("dev-1", "pw-1")}
      {device_user("dev-2", "pw-2")}
    ]
  }}
}}
"""


def desired_bucket_config() -> KeyValueConfig:
    """The ``desired`` bucket as docs/sync.md asks the hub to create it."""
    return KeyValueConfig(
        bucket=DESIRED_BUCKET,
        history=5,
        direct=True,
        republish=RePublish(
            src=DESIRED_REPUBLISH_SRC, dest=DESIRED_REPUBLISH_DEST, headers_only=True
        ),
    )


@dataclass
class Ingest:
    """The hub's role: pull reports, validate, apply each device's rows once by sequence."""

    js: JetStreamContext
    applied: dict[str, list[int]] = field(default_factory=dict)
    last_applied: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    replayed_rows: int = 0
    naks: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)
    prev_of: dict[int, int] = field(default_factory=dict)  # first_seq -> prev_seq
    errors: list[str] = field(default_factory=list)
    # Python 3.11's wait_for can swallow a cancel that lands as a fetch times out (the
    # fixture's teardown then waited forever): the loop also ends on this flag.
    stopped: bool = False

    async def pump(self) -> None:
        sub = await self.js.pull_subscribe(REPORT_WILDCARD, durable="ingest", stream=REPORT_STREAM)
        while not self.stopped:
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except TimeoutError:  # nats' own TimeoutError or asyncio's, depending on timing
                continue
            except Exception as exc:  # recorded, so a test fails with the reason
                self.errors.append(repr(exc))
                await asyncio.sleep(0.1)
                continue
            for msg in msgs:
                dev = msg.subject.split(".")[2]
                batch = decode_report(msg.data, subject_device=dev)
                check_msg_id(batch, (msg.headers or {}).get(MSG_ID_HEADER))
                self.messages += 1
                self.prev_of.setdefault(batch.first_seq, batch.prev_seq)
                plan = plan_apply(batch, self.last_applied.get(dev, 0))
                if plan.wait:
                    # Overtook an earlier batch that is being resent: apply it after that one.
                    self.naks += 1
                    await msg.nak(delay=0.2)
                    continue
                self.applied.setdefault(dev, []).extend(r.seq for r in plan.rows)
                self.replayed_rows += plan.replayed
                self.gaps.extend(plan.gaps)
                self.last_applied[dev] = plan.last_applied
                await msg.ack()


@dataclass
class World:
    hub: NatsHub
    proxy: TcpProxy
    hub_nc: NATS
    js: JetStreamContext
    ingest: Ingest
    store: Store
    svc: SyncService
    triggers: list[int]
    tmp: Path


async def start_service(
    tmp: Path, hub: NatsHub, proxy: TcpProxy, dev: str, pw: str, store: Store, triggers: list[int]
) -> SyncService:
    settings = SyncSettings(
        "leaf",
        credentials=EnrollReply(dev, dev, pw, f"nats-leaf://127.0.0.1:{proxy.port}", hub.url),
        workdir=tmp / f"leaf-{dev}",
        heartbeat_interval=0.5,
        uplink=UplinkSettings(batch_bytes=2048, idle_poll=0.1, backoff_max=1.0),
        # Default 300 s safety-net read: within a test only put prompts and the read after a
        # link restore can deliver desired state, so those are what the tests prove.
        downlink=DownlinkSettings(offline_probe=0.3),
    )

    def status() -> dict[str, Any]:
        return {"device": dev, "depth": store.outbox_depth()}

    handlers = RpcHandlers(
        reconcile=lambda: {"triggered": True},
        restart=lambda c: {"container": c, "restarted": True},
        logs=lambda c, n: [f"{c} line {i}" for i in range(n)],
        status=status,
    )
    svc = SyncService(
        store,
        settings,
        dev,
        trigger=lambda: triggers.append(store.current_desired().generation),  # type: ignore[union-attr]
        handlers=handlers,
    )
    await svc.start()
    return svc


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    hub = NatsHub(tmp_path / "hub", extra_conf=ACCOUNTS)
    proxy = TcpProxy(hub.leaf_port)
    hub_nc = await nats.connect(hub.url, user="hub", password=HUB_PW)
    js = hub_nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=REPORT_STREAM,
            subjects=[REPORT_WILDCARD],
            storage=StorageType.FILE,
            duplicate_window=2 * 3600,
            max_msg_size=256 * 1024 + 4096,
        )
    )
    await js.create_key_value(desired_bucket_config())
    ingest = Ingest(js)
    pump = asyncio.create_task(ingest.pump())
    store = Store.open(tmp_path / "agent.db", device_id="dev-1")
    triggers: list[int] = []
    svc = await start_service(tmp_path, hub, proxy, "dev-1", "pw-1", store, triggers)
    try:
        yield World(hub, proxy, hub_nc, js, ingest, store, svc, triggers, tmp_path)
    finally:
        await svc.stop()
        ingest.stopped = True
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        await hub_nc.close()
        store.close()
        proxy.close()
        hub.stop()


def record(store: Store, n: int, tag: str) -> None:
    for i in range(n):
        store.event("test.tick", f"{tag} {i}", data={"i": i, "pad": "x" * 200})


async def test_outbox_reaches_hub_exactly_once_across_a_cut(world: World) -> None:
    w = world
    record(w.store, 50, "online")
    await eventually(lambda: w.store.outbox_depth() == 0)
    await eventually(lambda: w.svc.online)

    w.proxy.cut()
    await eventually(lambda: not w.svc.online)
    record(w.store, 200, "offline")  # while cut: must all arrive later, once
    await asyncio.sleep(0.5)
    assert w.store.outbox_depth() >= 200
    w.proxy.restore()
    await eventually(lambda: w.store.outbox_depth() == 0, timeout=30)
    last = w.store.outbox_stats()["last_seq"]
    await eventually(lambda: w.ingest.last_applied.get("dev-1") == last or w.ingest.errors)
    assert w.ingest.errors == []
    assert w.ingest.applied["dev-1"] == list(range(1, last + 1))
    assert w.ingest.gaps == []
    # The first batch after the outage names the last row acknowledged before it.
    assert w.ingest.prev_of[51] == 50

    # Force a resend of already-stored batches (as if their PubAcks had been lost). No
    # Nats-Msg-Id (the stream's deduplication is stream-wide, so another device could forge
    # ours): the stream stores them again and the hub's per-device sequence drops them.
    info = await w.js.stream_info(REPORT_STREAM)
    before = info.state.messages
    replayed = w.ingest.replayed_rows
    with sqlite3.connect(w.store.path) as db:
        db.execute("UPDATE outbox SET sent_at = NULL WHERE seq <= 50")
    await eventually(lambda: w.store.outbox_depth() == 0)
    await eventually(lambda: w.ingest.replayed_rows >= replayed + 50)
    assert w.svc.uplink.stats.duplicates == 0  # type: ignore[union-attr]
    assert (await w.js.stream_info(REPORT_STREAM)).state.messages > before
    assert w.ingest.applied["dev-1"] == list(range(1, last + 1))


async def test_desired_update_online_and_after_cut(world: World) -> None:
    w = world
    kv = await w.js.key_value(DESIRED_BUCKET)
    doc = DesiredState(0, {"bundle": "app", "version": "1.0.0", "containers": []})
    await eventually(lambda: w.svc.online and w.svc.downlink.stats.probes >= 1)  # type: ignore[union-attr]
    rev1 = await kv.put("dev-1", doc.to_json())
    await eventually(lambda: w.triggers[-1:] == [rev1])
    stored = w.store.current_desired()
    assert stored is not None and stored.generation == rev1 and stored.spec == doc.spec

    w.proxy.cut()
    await eventually(lambda: not w.svc.online)
    await kv.put("dev-1", DesiredState(0, {"bundle": "app", "version": "2.0.0"}).to_json())
    rev3 = await kv.put("dev-1", DesiredState(0, {"bundle": "app", "version": "3.0.0"}).to_json())
    await asyncio.sleep(1.0)
    assert w.store.current_desired().generation == rev1  # type: ignore[union-attr]
    w.proxy.restore()
    await eventually(lambda: w.triggers[-1:] == [rev3])
    assert w.store.current_desired().spec["version"] == "3.0.0"  # type: ignore[index,union-attr]

    # A broken document is refused, counted and logged as an event, never applied.
    bad = await kv.put("dev-1", b'{"v":1,"generation":"x"}')
    await eventually(lambda: w.svc.downlink.stats.invalid == 1)  # type: ignore[union-attr]
    assert w.store.current_desired().generation == rev3  # type: ignore[union-attr]
    assert any(
        e.kind == "desired.invalid" and e.data["revision"] == bad for e in w.store.events(limit=500)
    )


async def test_rpc_online_and_fast_failure_when_cut(world: World) -> None:
    w = world

    async def ask(verb: str, body: bytes) -> Any:
        return decode_rpc_reply((await w.hub_nc.request(rpc("dev-1", verb), body, timeout=5)).data)

    async def answered() -> bool:
        try:
            await ask("status", RpcRequest("status").to_json())
            return True
        except NoRespondersError:
            return False

    await eventually(answered)
    reply = await ask("logs", RpcRequest("logs", "web", 3).to_json())
    assert reply.result["lines"] == ["web line 0", "web line 1", "web line 2"]
    bad = await ask("restart", b'{"v":1,"args":{}}')
    assert bad.error["field"] == "args.container"
    junk = await ask("status", b"\xff not json")
    assert junk.error["code"] == "bad_request"

    w.proxy.cut()
    await eventually(lambda: not w.svc.online)
    with pytest.raises(NoRespondersError):
        await w.hub_nc.request(rpc("dev-1", "status"), RpcRequest("status").to_json(), timeout=10)
    w.proxy.restore()
    await eventually(answered)


async def test_heartbeats_arrive(world: World) -> None:
    got: list[Any] = []

    async def on_hb(msg: Any) -> None:
        got.append(decode_heartbeat(msg.data, subject_device=msg.subject.split(".")[2]))

    await world.hub_nc.subscribe("sb.dev.*.heartbeat", cb=on_hb)
    await eventually(lambda: len(got) >= 2)
    assert got[-1].device_id == "dev-1"


async def test_leaf_supervisor_restarts_a_killed_leaf(world: World) -> None:
    w = world
    leaf = w.svc.leaf
    assert leaf is not None and leaf.pid is not None
    old = leaf.pid
    assert (os.stat(leaf.conf_path).st_mode & 0o777) == 0o600
    os.kill(old, signal.SIGKILL)
    await eventually(lambda: leaf.restarts == 1 and leaf.alive() and leaf.pid != old)
    record(w.store, 5, "after restart")
    await eventually(lambda: w.store.outbox_depth() == 0, timeout=30)
    last = w.store.outbox_stats()["last_seq"]
    await eventually(lambda: w.ingest.last_applied.get("dev-1") == last)
    # Stopping the agent ends the restarted leaf too: no process of its config is left.
    # (This stop hung under two busy cores: the link came up as it began, and the nkey
    # migration's wait lost its cancel; tests/unit/test_sbutil_tasks.py forces that.)
    assert pids_with_arg(leaf.conf_path) == [leaf.pid]
    await w.svc.stop()
    assert pids_with_arg(leaf.conf_path) == []


async def test_device_cannot_act_as_another(world: World) -> None:
    w = world
    await eventually(lambda: w.svc.online)
    nc = w.svc.nc
    assert nc is not None
    js = nc.jetstream(domain="hub")
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await js.publish("sb.dev.dev-2.report", b"{}", timeout=2)
    kv = await w.js.key_value(DESIRED_BUCKET)
    await kv.put("dev-2", DesiredState(0, None).to_json())
    with pytest.raises((NoRespondersError, nats.errors.TimeoutError)):
        await nc.request("$JS.hub.API.DIRECT.GET.KV_desired.$KV.desired.dev-2", b"", timeout=2)


async def test_link_flapping_delivers_everything_once(world: World) -> None:
    w = world
    rng = random.Random(5)
    stop = asyncio.Event()

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            record(w.store, 5, f"flap {i}")
            i += 1
            await asyncio.sleep(0.05)

    task = asyncio.create_task(writer())
    try:
        for _ in range(8):  # bounded: ~8-12 s of cut/restore
            w.proxy.cut()
            await asyncio.sleep(rng.uniform(0.3, 0.8))
            w.proxy.restore()
            await asyncio.sleep(rng.uniform(0.4, 1.0))
    finally:
        stop.set()
        await task
    await eventually(lambda: w.store.outbox_depth() == 0, timeout=30)
    last = w.store.outbox_stats()["last_seq"]
    await eventually(lambda: w.ingest.last_applied.get("dev-1") == last or w.ingest.errors)
    assert w.ingest.errors == []
    assert w.ingest.applied["dev-1"] == list(range(1, last + 1))


async def test_a_batch_that_overtakes_a_failed_one_is_applied_after_it(world: World) -> None:
    """Real out-of-order arrival: the stream refuses one batch (too big for it) while the next,
    pipelined behind it, is stored. The hub model NAKs that one (its prev_seq is ahead of what
    was applied) until the device's resend of the refused rows lands, so every row is applied
    once and in order."""
    w = world
    await eventually(lambda: w.svc.online and w.store.outbox_depth() == 0)
    base = w.store.outbox_stats()["last_seq"]
    await eventually(lambda: w.ingest.last_applied.get("dev-1", 0) == base)
    assert w.svc.uplink is not None
    w.svc.uplink.settings = dataclasses.replace(
        w.svc.uplink.settings, batch_rows=2, batch_bytes=16 * 1024
    )
    info = await w.js.stream_info(REPORT_STREAM)
    await w.js.update_stream(dataclasses.replace(info.config, max_msg_size=3000))

    def burst() -> None:
        record(w.store, 2, "before")
        w.store.event("test.big", "big", data={"pad": "y" * 5000})
        record(w.store, 5, "after")

    burst()
    await eventually(lambda: w.ingest.naks > 0)
    assert w.store.outbox_depth() > 0  # the refused rows and everything after stay queued
    await w.js.update_stream(dataclasses.replace(info.config, max_msg_size=1024 * 1024))
    await eventually(lambda: w.store.outbox_depth() == 0, timeout=30)
    last = w.store.outbox_stats()["last_seq"]
    await eventually(lambda: w.ingest.last_applied.get("dev-1") == last or w.ingest.errors)
    assert w.ingest.errors == []
    assert w.ingest.applied["dev-1"] == list(range(1, last + 1))
