"""A local override applied through the HTTP API while the device is offline reaches the hub
as an audited row once the link returns: a real hub nats-server, the agent's own leaf, a
cuttable link, the sync service and the API sharing one store file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import nats
from nats.js.api import KeyValueConfig, StorageType, StreamConfig

from agent.config import AgentConfig
from agent.http.context import AppContext, HubLink
from agent.http.server import bound_port, start
from agent.http.tokens import TokenStore
from agent.store import Store
from agent.sync.downlink import DownlinkSettings
from agent.sync.rpc import RpcHandlers
from agent.sync.service import SyncService, SyncSettings
from agent.sync.uplink import UplinkSettings
from protocol.enroll import EnrollReply
from protocol.report import decode_report
from protocol.subjects import DESIRED_BUCKET, REPORT_STREAM, REPORT_WILDCARD
from tests.harness.nats import NatsHub
from tests.harness.proxy import TcpProxy
from tests.harness.wait import eventually

DEV = "dev-http"
HUB_PW = "hub-secret"
ACCOUNTS = f"""
accounts {{
  SB {{
    jetstream: enabled
    users: [
      {{ user: hub, password: "{HUB_PW}" }}
      {{ user: "{DEV}", password: "pw", permissions: {{
          publish: {{ allow: ["sb.dev.{DEV}.>", "_INBOX.>", "$JS.hub.API.DIRECT.GET.KV_desired.$KV.desired.{DEV}"] }},
          subscribe: {{ allow: ["_INBOX.{DEV}.>", "$KV.desired.{DEV}", "sb.dev.{DEV}.rpc.>"] }} }} }}
    ]
  }}
}}
"""
BUNDLE = (
    "bundle: field-fix\nversion: 2.0.1\ncontainers:\n"
    "  - name: web\n    image: registry.example.com/acme/web:2.0.1\n"
)


async def test_offline_override_reaches_the_hub_audited(tmp_path: Path) -> None:
    hub = NatsHub(tmp_path / "hub", extra_conf=ACCOUNTS)
    proxy = TcpProxy(hub.leaf_port)
    hub_nc = await nats.connect(hub.url, user="hub", password=HUB_PW)
    store = Store.open(tmp_path / "agent" / "agent.db", device_id=DEV)
    tokens = TokenStore.in_data_dir(tmp_path / "agent")
    svc: SyncService | None = None
    runner = None
    try:
        js = hub_nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=REPORT_STREAM,
                subjects=[REPORT_WILDCARD],
                storage=StorageType.FILE,
                duplicate_window=7200,
            )
        )
        await js.create_key_value(KeyValueConfig(bucket=DESIRED_BUCKET, history=5, direct=True))
        svc = SyncService(
            store,
            SyncSettings(
                "leaf",
                credentials=EnrollReply(
                    DEV, DEV, "pw", f"nats-leaf://127.0.0.1:{proxy.port}", hub.url
                ),
                workdir=tmp_path / "leaf",
                heartbeat_interval=0.5,
                uplink=UplinkSettings(idle_poll=0.1, backoff_max=1.0),
                downlink=DownlinkSettings(poll_interval=5.0, offline_probe=0.3),
            ),
            DEV,
            trigger=lambda: None,
            handlers=RpcHandlers(
                reconcile=lambda: {}, restart=lambda c: {}, logs=lambda c, n: [], status=lambda: {}
            ),
        )
        await svc.start()
        link = svc.link
        ctx = AppContext(
            config=AgentConfig(data_dir=tmp_path / "agent", device_id=DEV),
            store=store,
            tokens=tokens,
            hub_link=lambda: HubLink(link.online, link.last_contact),
        )
        runner = await start(ctx, host="127.0.0.1", port=0)
        url = f"http://127.0.0.1:{bound_port(runner)}"
        _, token = tokens.create("tech-ana", "operator", created_by="test")
        auth = {"Authorization": f"Bearer {token}"}
        await eventually(lambda: svc is not None and svc.online, "the link up")

        proxy.cut()
        await eventually(lambda: svc is not None and not svc.online, "the link down")
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.get(url + "/v1/status") as resp:
                assert (await resp.json())["hub"]["online"] is False
            async with http.post(
                url + "/v1/local/desired",
                data=BUNDLE,
                headers={"Content-Type": "application/yaml"},
            ) as resp:
                assert resp.status == 201, await resp.text()
                generation = (await resp.json())["generation"]
        await asyncio.sleep(0.5)
        assert store.outbox_depth() > 0  # held while offline

        proxy.restore()
        await eventually(lambda: store.outbox_depth() == 0, "the outbox to drain", timeout=45)

        rows = []
        sub = await js.pull_subscribe(REPORT_WILDCARD, durable="check", stream=REPORT_STREAM)
        for _ in range(50):
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except TimeoutError:
                break
            for msg in msgs:
                rows += list(decode_report(msg.data, subject_device=DEV).rows)
                await msg.ack()
        desired = [r.payload for r in rows if r.kind == "desired"]
        assert any(
            d["source"] == "local"
            and d["generation"] == generation
            and d["actor"] == "token:tech-ana"
            and d["spec"]["bundle"] == "field-fix"
            for d in desired
        ), desired
        events = [r.payload for r in rows if r.kind == "event"]
        changed = [e for e in events if e["kind"] == "desired.changed"]
        assert changed and "by token:tech-ana" in changed[-1]["message"]
        assert all(token not in repr(r.payload) for r in rows)
    finally:
        if runner is not None:
            await runner.cleanup()
        if svc is not None:
            await svc.stop()
        await hub_nc.close()
        tokens.close()
        store.close()
        proxy.close()
        hub.stop()
