"""TLS on the leaf link with real processes: `signalbeam-hub init --leaf-tls-self-signed` +
`run` (its own nats-server, leafnode listener requiring TLS) and the agent's own supervised
leaf nats-server configured from ``[hub] ca_file``. The right CA brings the link up and a
message crosses it; a wrong CA keeps it down, with the x509 reason in the agent's status."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from agent.config import config_from_dict
from agent.store import Store
from agent.sync.enroll import credentials_path, save_credentials
from agent.sync.service import SyncService, settings_from_config
from hub.tls import self_signed
from protocol.enroll import EnrollReply
from tests.harness.sync_hub import (
    SyncHub,
    enroll_device,
    new_token,
)
from tests.harness.wait import eventually
from tui.client import HubClient


class TlsHub(SyncHub):
    """A hub initialised with a self-signed leaf certificate for 127.0.0.1."""

    def __init__(self, data: Path) -> None:
        super().__init__(data, init_flags=["--leaf-tls-self-signed"])

    @property
    def cert(self) -> Path:
        return Path(self.init["leaf_tls_cert"])

    def leafz(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.ports['monitor']}/leafz"
        with urllib.request.urlopen(url, timeout=2) as resp:
            doc: dict[str, Any] = json.load(resp)
            return doc


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsHub]:
    proc = TlsHub(tmp_path_factory.mktemp("tlshub") / "data")
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


@pytest.fixture
async def admin(hub: TlsHub) -> AsyncIterator[HubClient]:
    async with hub.client() as c:
        yield c


async def _enrolled(hub: TlsHub, admin: HubClient, device: str) -> EnrollReply:
    return await enroll_device(hub, await new_token(admin), device)


def _agent(tmp_path: Path, device: str, reply: EnrollReply, ca_file: Path) -> SyncService:
    cfg = config_from_dict(
        {"data_dir": str(tmp_path / device), "device_id": device, "hub": {"ca_file": str(ca_file)}}
    )
    save_credentials(credentials_path(cfg), reply)
    settings = settings_from_config(cfg)
    assert settings is not None and settings.mode == "leaf"
    store = Store.open(cfg.db_path, device_id=device)
    return SyncService(store, settings, device, trigger=lambda: None)


async def test_pinned_ca_brings_the_tls_link_up(
    hub: TlsHub, admin: HubClient, tmp_path: Path
) -> None:
    reply = await _enrolled(hub, admin, "tls-good")
    assert reply.leaf_url == f"tls://127.0.0.1:{hub.ports['leafnode']}"
    svc = _agent(tmp_path, "tls-good", reply, hub.cert)
    hub_nc = await hub.hub_nc()
    try:
        sub = await hub_nc.subscribe("sb.dev.tls-good.probe")
        await hub_nc.flush()
        await svc.start()
        conf = json.loads((tmp_path / "tls-good" / "leaf" / "leaf.conf").read_text())
        remote = conf["leafnodes"]["remotes"][0]
        assert remote["url"].startswith("tls://") and remote["tls"]["ca_file"] == str(hub.cert)
        await eventually(lambda: svc.online, timeout=30, what="the TLS leaf link comes up")
        assert svc.nc is not None

        async def crossed() -> bool:
            # Interest may take a moment to propagate over a fresh link: publish until heard.
            assert svc.nc is not None
            await svc.nc.publish("sb.dev.tls-good.probe", b"over tls")
            try:
                msg = await sub.next_msg(timeout=0.5)
            except nats.errors.TimeoutError:
                return False
            return msg.data == b"over tls"

        await eventually(crossed, timeout=30, what="a message crosses the TLS leaf link")
    finally:
        await svc.stop()
        svc.store.close()
        await hub_nc.close()


async def test_wrong_ca_keeps_the_link_down_with_the_reason(
    hub: TlsHub, admin: HubClient, tmp_path: Path
) -> None:
    reply = await _enrolled(hub, admin, "tls-bad")
    wrong = tmp_path / "wrong-ca.pem"
    self_signed(wrong, tmp_path / "wrong-key.pem", "127.0.0.1")
    svc = _agent(tmp_path, "tls-bad", reply, wrong)
    try:
        await svc.start()

        def failed() -> bool:
            return "unknown authority" in str(svc.status().get("last_error") or "")

        await eventually(failed, timeout=30, what="the agent reports the certificate failure")
        assert not svc.online
        assert "x509" in str(svc.status()["last_error"])
        # The hub never accepted a leaf connection for this device.
        assert "tls-bad" not in json.dumps(hub.leafz())
    finally:
        await svc.stop()
        svc.store.close()
