"""TLS on the hub's client port with real processes: `signalbeam-hub init --tls-self-signed`
+ `run` (its own nats-server with a TLS-only client listener and leafnode listener, the
hub's own connection over TLS) and a real `signalbeam-agent enroll` subprocess.

The right CA enrolls over tls:// and the device's leaf link comes up; a wrong CA, no CA,
and a tls:// URL to a plain server are refused with one clear line and exit 3; a plain
client is refused by the port itself. The operator CLI and the TUI's session reach the same
hub with `--ca-file`/`$SIGNALBEAM_CA_FILE`, name a wrong CA, and refuse a plain fallback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from agent.config import config_from_dict
from agent.store import Store
from agent.sync.enroll import EXIT_TLS, credentials_path, load_credentials
from agent.sync.service import SyncService, settings_from_config
from hub.tls import self_signed
from protocol import natstls
from tests.harness.nats import NatsHub
from tests.harness.sync_hub import SyncHub, new_token
from tests.harness.wait import eventually
from tui.client import ApiError, HubClient
from tui.hub.session import HubSession

REPO = Path(__file__).resolve().parents[2]


class ClientTlsHub(SyncHub):
    """A hub whose client and leafnode listeners both require TLS (one self-signed
    certificate for 127.0.0.1)."""

    def __init__(self, data: Path) -> None:
        # Ready means /health/ready: the hub's own NATS connection is up, over TLS.
        super().__init__(data, init_flags=["--tls-self-signed"])

    @property
    def cert(self) -> Path:
        return Path(self.init["client_tls_cert"])

    async def hub_nc(self) -> NATS:
        return await nats.connect(
            f"tls://127.0.0.1:{self.port}",
            user="hub",
            password=self.secret("hub_password"),
            tls=natstls.client_context(str(self.cert)),
        )


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClientTlsHub]:
    proc = ClientTlsHub(tmp_path_factory.mktemp("clienttls") / "data")
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


@pytest.fixture
async def admin(hub: ClientTlsHub) -> AsyncIterator[HubClient]:
    # The operator client over TLS, pinned to the hub's certificate as the CLI/TUI's
    # --ca-file does.
    client = HubClient(hub.url, hub.admin_key, ca_file=str(hub.cert))
    await client.connect()
    assert client.nc is not None and natstls.is_tls(client.nc)
    try:
        yield client
    finally:
        await client.close()


def _enroll(
    data_dir: Path, hub_arg: str, token: str, device: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "agent", "enroll", "--data-dir", str(data_dir)]
    argv += ["--hub", hub_arg, "--token", token, "--device-id", device, *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)


def _refused_clearly(proc: subprocess.CompletedProcess[str], words: str) -> None:
    assert proc.returncode == EXIT_TLS, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line, line
    assert words in line, line


async def test_enroll_over_tls_with_the_right_ca_then_the_leaf_link_comes_up(
    hub: ClientTlsHub, admin: HubClient, tmp_path: Path
) -> None:
    token = await new_token(admin)
    device = "ctls-good"
    data_dir = tmp_path / device
    enroll_url = hub.init["enroll_url"]
    assert enroll_url.startswith("tls://enroll:")
    proc = await asyncio.to_thread(
        _enroll, data_dir, enroll_url, token, device, "--ca-file", str(hub.cert), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["leaf_url"] == f"tls://127.0.0.1:{hub.ports['leafnode']}"

    cfg = config_from_dict(
        {"data_dir": str(data_dir), "device_id": device, "hub": {"ca_file": str(hub.cert)}}
    )
    assert load_credentials(credentials_path(cfg)).device_id == device
    settings = settings_from_config(cfg)
    assert settings is not None and settings.mode == "leaf"
    store = Store.open(cfg.db_path, device_id=device)
    svc = SyncService(store, settings, device, trigger=lambda: None)
    try:
        await svc.start()
        await eventually(lambda: svc.online, timeout=30, what="the device's TLS leaf link comes up")
        # The hub sees the device through its own (TLS) connection.
        await eventually(
            lambda: bool(hub.query("SELECT 1 FROM devices WHERE id = ?", (device,))),
            timeout=10,
            what="the hub recorded the device",
        )
    finally:
        await svc.stop()
        svc.store.close()


async def test_direct_mode_reaches_a_tls_hub_with_the_config_ca(
    hub: ClientTlsHub, admin: HubClient, tmp_path: Path
) -> None:
    """Direct mode (`[hub] url`, no leaf) dials the hub's TLS client port itself."""
    token = await new_token(admin)
    device = "ctls-direct"
    data_dir = tmp_path / device
    proc = await asyncio.to_thread(
        _enroll, data_dir, hub.init["enroll_url"], token, device, "--ca-file", str(hub.cert)
    )
    assert proc.returncode == 0, proc.stderr
    cfg = config_from_dict(
        {
            "data_dir": str(data_dir),
            "device_id": device,
            "hub": {"url": f"tls://127.0.0.1:{hub.port}", "ca_file": str(hub.cert)},
        }
    )
    settings = settings_from_config(cfg)
    assert settings is not None and settings.mode == "direct"
    store = Store.open(cfg.db_path, device_id=device)
    svc = SyncService(store, settings, device, trigger=lambda: None)
    try:
        await svc.start()
        await eventually(lambda: svc.online, timeout=30, what="the direct TLS link comes up")
    finally:
        await svc.stop()
        svc.store.close()


async def test_the_config_ca_file_is_used_for_enrollment_too(
    hub: ClientTlsHub, admin: HubClient, tmp_path: Path
) -> None:
    token = await new_token(admin)
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "ctls-conf"\n[hub]\nca_file = {json.dumps(str(hub.cert))}\n')
    proc = await asyncio.to_thread(
        _enroll,
        tmp_path / "d",
        f"tls://127.0.0.1:{hub.port}",
        token,
        "ctls-conf",
        "--config",
        str(config),
        "--bootstrap-password",
        hub.secret("enroll_password"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "enrolled as ctls-conf" in proc.stdout


async def test_a_wrong_ca_is_refused_with_the_ca_named(
    hub: ClientTlsHub, admin: HubClient, tmp_path: Path
) -> None:
    token = await new_token(admin)
    wrong = tmp_path / "wrong-ca.pem"
    self_signed(wrong, tmp_path / "wrong-key.pem", "127.0.0.1")
    proc = await asyncio.to_thread(
        _enroll, tmp_path / "d", hub.init["enroll_url"], token, "ctls-bad", "--ca-file", str(wrong)
    )
    _refused_clearly(proc, f"the hub's certificate is not signed by CA {wrong}")
    assert not (tmp_path / "d" / "hub-credentials.json").exists()
    # The token was never sent: it still enrolls a device.
    ok = await asyncio.to_thread(
        _enroll,
        tmp_path / "d2",
        hub.init["enroll_url"],
        token,
        "ctls-after",
        "--ca-file",
        str(hub.cert),
    )
    assert ok.returncode == 0, ok.stderr


async def test_nats_url_without_a_ca_is_refused_clearly(
    hub: ClientTlsHub, admin: HubClient, tmp_path: Path
) -> None:
    token = await new_token(admin)
    plain_url = hub.init["enroll_url"].replace("tls://", "nats://", 1)
    proc = await asyncio.to_thread(_enroll, tmp_path / "d", plain_url, token, "ctls-noca")
    _refused_clearly(proc, "the hub requires TLS and its certificate is not signed by a CA")


async def test_a_plain_client_is_refused_by_the_port(hub: ClientTlsHub) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        info = json.loads((await reader.readline()).decode().split(" ", 1)[1])
        assert info["tls_required"] is True
        password = hub.secret("enroll_password")
        connect = {"user": "enroll", "pass": password, "verbose": False, "pedantic": False}
        writer.write(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 10)
        # nats-server answers plain text on a TLS-only port with a TLS error or just closes.
        assert b"PONG" not in answer
    finally:
        writer.close()


async def test_tls_url_to_a_plain_server_is_refused(tmp_path: Path) -> None:
    plain = NatsHub(tmp_path / "plain")
    try:
        proc = await asyncio.to_thread(
            _enroll, tmp_path / "d", f"tls://127.0.0.1:{plain.port}", "sbt_x", "ctls-plain"
        )
        _refused_clearly(proc, "did not offer TLS; not sending the registration token")
    finally:
        plain.stop()


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALBEAM_")}
    base["SIGNALBEAM_CONFIG"] = "/nonexistent/signalbeam.toml"
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *argv],
        capture_output=True, text=True, timeout=60, cwd=REPO, env={**base, **(env or {})},
    )  # fmt: skip


def test_the_cli_talks_to_a_tls_hub_with_its_ca_file(hub: ClientTlsHub) -> None:
    flags = ["--hub", hub.url, "--api-key", hub.admin_key, "--json"]
    ok = _cli("devices", *flags, "--ca-file", str(hub.cert))
    assert ok.returncode == 0, ok.stderr
    assert "items" in json.loads(ok.stdout)
    # The same CA from the environment.
    env = _cli("devices", *flags, env={"SIGNALBEAM_CA_FILE": str(hub.cert)})
    assert env.returncode == 0, env.stderr


def test_the_cli_names_a_wrong_ca_and_a_missing_one(hub: ClientTlsHub, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pem"
    self_signed(wrong, tmp_path / "wrong-key.pem", "127.0.0.1")
    flags = ["--hub", hub.url, "--api-key", hub.admin_key]
    bad = _cli("devices", *flags, "--ca-file", str(wrong))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr
    assert f"not signed by CA {wrong}" in bad.stderr, bad.stderr
    missing = _cli("devices", *flags, "--ca-file", str(tmp_path / "nope.pem"))
    assert missing.returncode == 2 and "ca_file: cannot read" in missing.stderr, missing.stderr


async def test_the_tui_session_opens_over_tls(hub: ClientTlsHub) -> None:
    session = HubSession(hub.url, hub.admin_key, 5.0, str(hub.cert))
    try:
        await session.open()
        assert session.client.nc is not None and natstls.is_tls(session.client.nc)
        assert "items" in await session.call("devices.list", {"limit": 1})
    finally:
        await session.close()


async def test_the_tui_session_refuses_a_tls_url_to_a_plain_server(tmp_path: Path) -> None:
    plain = NatsHub(tmp_path / "plain")
    session = HubSession(f"tls://127.0.0.1:{plain.port}", "key", 2.0)
    try:
        with pytest.raises(ApiError) as err:
            await session.open()
        assert "did not offer TLS; not sending credentials" in str(err.value)
    finally:
        await session.close()
        plain.stop()
