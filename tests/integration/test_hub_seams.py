"""The seams the sync issue builds on, exercised in-process against real children:
components start and stop with the hub, and `reload_nats` adds a NATS user without dropping
existing connections."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from hub.app import Hub
from hub.config import DataDir, HubConfig, Secrets, save
from hub.natsconf import NatsUser
from tests.harness.ports import free_port


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.seen_devices: int | None = None

    async def start(self, hub: Hub) -> None:
        assert hub.store is not None and hub.nc is not None and hub.api is not None
        self.seen_devices = await hub.call(hub.store.scalar, "SELECT count(*) FROM devices")
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")


async def connect_when_allowed(url: str, **opts: Any) -> NATS:
    last: Exception | None = None
    for _ in range(50):  # the reload is asynchronous: bounded retries
        try:
            return await nats.connect(url, allow_reconnect=False, connect_timeout=2, **opts)
        except Exception as exc:  # authorization error until the reload lands
            last = exc
            await asyncio.sleep(0.1)
    raise AssertionError(f"new user never accepted: {last!r}")


async def test_components_and_reload_with_a_new_user(tmp_path: Path) -> None:
    cfg = HubConfig(
        client_port=free_port(),
        leafnode_port=free_port(),
        monitor_port=free_port(),
        http_port=free_port(),
        host="127.0.0.1",
        http_host="127.0.0.1",
        litestream=False,
    )
    data = DataDir(tmp_path / "data")
    sec = Secrets.generate()
    save(data, cfg, sec)
    hub = Hub(data, cfg, sec)
    rec = Recorder()
    hub.components.append(rec)
    await hub.start()
    try:
        assert rec.calls == ["start"] and rec.seen_devices == 0
        assert hub.nc is not None
        url = f"nats://dev-1:pw1@127.0.0.1:{cfg.client_port}"
        with pytest.raises(Exception):  # noqa: B017 - not a user yet
            await nats.connect(url, allow_reconnect=False, connect_timeout=2)
        await hub.reload_nats(
            [NatsUser("dev-1", "pw1", publish=("sb.dev.dev-1.>",), subscribe=("_INBOX.>",))]
        )
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)  # permission violations arrive asynchronously

        dev = await connect_when_allowed(url, error_cb=on_error)
        try:
            got: list[bytes] = []

            async def on_msg(msg: nats.aio.msg.Msg) -> None:
                got.append(msg.data)

            await hub.nc.subscribe("sb.dev.*.report", cb=on_msg)
            await hub.nc.flush()
            await dev.publish("sb.dev.dev-1.report", b"mine")
            await dev.publish("sb.dev.dev-2.report", b"forged")
            await dev.flush()
            for _ in range(50):
                if got and errors:
                    break
                await asyncio.sleep(0.05)
            assert got == [b"mine"]
            assert any("permissions violation" in str(e).lower() for e in errors)
        finally:
            await dev.close()
        # The hub's own connection rode through the reload.
        assert hub.nc.is_connected and hub.nc.stats["reconnects"] == 0
        assert await hub.readiness() == []
    finally:
        await hub.stop()
    assert rec.calls == ["start", "stop"]
    assert hub.nats_child is not None and not hub.nats_child.running


async def test_device_user_links_a_leaf_and_jetstream_answers_in_domain_hub(tmp_path: Path) -> None:
    """What the sync issue relies on: JetStream (KV) in domain `hub` for the hub user, and a
    leaf server linking in with a per-device user added by reload."""
    import json as _json
    import urllib.request

    from tests.harness.binaries import require_binary
    from tests.harness.procs import ManagedProcess

    cfg = HubConfig(
        client_port=free_port(),
        leafnode_port=free_port(),
        monitor_port=free_port(),
        http_port=free_port(),
        host="127.0.0.1",
        http_host="127.0.0.1",
        litestream=False,
    )
    data = DataDir(tmp_path / "data")
    sec = Secrets.generate()
    save(data, cfg, sec)
    hub = Hub(data, cfg, sec)
    await hub.start()
    leaf: ManagedProcess | None = None
    try:
        assert hub.nc is not None
        js = hub.nc.jetstream(domain="hub")
        kv = await js.create_key_value(bucket="seamcheck")
        await kv.put("dev-1", b"{}")
        assert (await kv.get("dev-1")).value == b"{}"

        await hub.reload_nats([NatsUser("dev-1", "pw1")])
        leaf_port, leaf_http = free_port(), free_port()
        conf = tmp_path / "leaf.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{leaf_port}\nhttp: 127.0.0.1:{leaf_http}\n"
            'leafnodes { reconnect: "1s", remotes: [ { url: '
            f'"nats-leaf://dev-1:pw1@127.0.0.1:{cfg.leafnode_port}" }} ] }}\n'
        )
        leaf = ManagedProcess(
            "leaf", [require_binary("nats-server"), "-c", str(conf)], tmp_path / "leaf.log"
        )

        def linked() -> bool:
            url = f"http://127.0.0.1:{cfg.monitor_port}/leafz"
            with urllib.request.urlopen(url, timeout=10) as resp:
                return int(_json.load(resp).get("leafnodes", 0)) == 1

        await asyncio.to_thread(leaf.wait_ready, linked, 60.0)
    finally:
        if leaf is not None:
            leaf.stop()
        await hub.stop()
