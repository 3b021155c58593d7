"""Enrollment end to end on the device side: the CLI command against a real hub nats-server
(bootstrap user limited to ``sb.hub.enroll``), with the test playing the hub's handler; then
the saved credentials bring up the supervised leaf and the device goes online. And a real
`signalbeam-agent run` started before enrollment links up to a real `signalbeam-hub run`
once `signalbeam-agent enroll` runs beside it, with no restart."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from agent.config import config_from_dict
from agent.store import Store
from agent.sync.enroll import add_enroll_command, credentials_path
from agent.sync.service import SyncService, settings_from_config
from protocol.enroll import EnrollReply, decode_enroll_request
from protocol.errors import MessageError
from protocol.rpc import rpc_error
from protocol.subjects import ENROLL, REPORT_STREAM, REPORT_WILDCARD
from tests.harness.nats import NatsHub
from tests.harness.procs import ManagedProcess
from tests.harness.sync_e2e import REPO, enrollment_token
from tests.harness.sync_hub import SyncHub
from tests.harness.wait import eventually
from tests.integration.test_sync_agent import desired_bucket_config

ACCOUNTS = """
accounts {
  SB {
    jetstream: enabled
    users: [
      { user: hub, password: "hub-pw" }
      { user: enroll, password: "boot-pw", permissions: {
          publish: { allow: ["sb.hub.enroll"] }, subscribe: { allow: ["_INBOX.>"] } } }
      { user: "dev-9", password: "pw-9", permissions: {
          publish: { allow: ["sb.dev.dev-9.>", "_INBOX.>", "$JS.hub.API.DIRECT.GET.KV_desired.$KV.desired.dev-9"] },
          subscribe: { allow: ["_INBOX.dev-9.>", "sb.desired.dev-9", "sb.dev.dev-9.rpc.>"] } } }
    ]
  }
}
"""


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_enroll_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


async def test_enroll_then_sync_online(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub = NatsHub(tmp_path / "hub", extra_conf=ACCOUNTS)
    hub_nc = await nats.connect(hub.url, user="hub", password="hub-pw")
    # The contract: the hub creates the desired bucket (direct get on) before devices come;
    # the device's read of its key is also its hub-link probe.
    hub_js = hub_nc.jetstream()
    await hub_js.create_key_value(desired_bucket_config())
    await hub_js.add_stream(name=REPORT_STREAM, subjects=[REPORT_WILDCARD], duplicate_window=7200)
    seen: list[str] = []

    async def handler(msg: Msg) -> None:
        try:
            req = decode_enroll_request(msg.data)
        except MessageError as exc:
            await msg.respond(rpc_error(exc.code, exc.message, exc.field))
            return
        seen.append(req.device_id)
        if req.token != "good-token":
            await msg.respond(rpc_error("forbidden", "token is expired or unknown", "token"))
            return
        reply = EnrollReply(
            req.device_id, "dev-9", "pw-9", f"nats-leaf://127.0.0.1:{hub.leaf_port}", hub.url
        )
        await msg.respond(reply.to_json())

    await hub_nc.subscribe(ENROLL, cb=handler)
    await hub_nc.flush()
    data = tmp_path / "agent"
    base = ["enroll", "--data-dir", str(data), "--hub", f"127.0.0.1:{hub.port}"]
    base += ["--device-id", "dev-9", "--bootstrap-password", "boot-pw"]
    svc = None
    try:
        code = await asyncio.to_thread(_cli, [*base, "--token", "bad-token"])
        assert code == 1
        assert "token is expired" in capsys.readouterr().err
        cfg = config_from_dict({"data_dir": str(data), "device_id": "dev-9"})
        assert not credentials_path(cfg).exists()

        code = await asyncio.to_thread(_cli, [*base, "--token", "good-token", "--tags", "lab,rpi"])
        assert code == 0, capsys.readouterr().err
        path = credentials_path(cfg)
        assert path.stat().st_mode & 0o777 == 0o600
        assert seen == ["dev-9", "dev-9"]

        store = Store.open(cfg.db_path, device_id="dev-9")
        assert any(e.kind == "enrolled" for e in store.events())
        settings = settings_from_config(cfg)
        assert settings is not None and settings.mode == "leaf"
        svc = SyncService(store, settings, "dev-9", trigger=lambda: None)
        await svc.start()
        deadline = time.monotonic() + 60
        while not svc.online and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert svc.online, svc.status()
        # The "enrolled" event recorded by the CLI is delivered through the outbox.
        while store.outbox_depth() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert store.outbox_depth() == 0, svc.status()
    finally:
        if svc is not None:
            await svc.stop()
            svc.store.close()
        await hub_nc.close()
        hub.stop()


def test_enroll_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["enroll", "--data-dir", str(tmp_path), "--hub", "127.0.0.1:1", "--token", "t"]
    assert _cli([*base, "--device-id", "Not_Valid"]) == 2
    assert "device id" in capsys.readouterr().err
    assert _cli([*base, "--device-id", "dev-1", "--tags", "ok,not ok"]) == 2
    assert "tags[1]" in capsys.readouterr().err


def _pending(db: Path) -> int | None:
    """Outbox rows not yet acknowledged by the hub, read beside the running agent (WAL)."""
    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0])
    except sqlite3.OperationalError:  # the agent has not made its tables yet
        return None
    finally:
        conn.close()


@pytest.mark.slow
async def test_enroll_beside_a_running_agent_links_up_without_a_restart(tmp_path: Path) -> None:
    hub = SyncHub(tmp_path / "hub")
    root = tmp_path / "dev"
    data = root / "data"
    config = root / "agent.toml"
    root.mkdir()
    # No engine at this socket: the agent keeps retrying it, and sync does not depend on it.
    config.write_text(
        f'data_dir = "{data}"\ndevice_id = "late-1"\n'
        f'engine_socket = "unix://{root / "no-engine.sock"}"\n'
        '[http]\nenabled = false\n[hub]\nheartbeat_interval = "2s"\n'
    )
    agent = ManagedProcess(
        "agent-late-1",
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        root / "agent.log",
        cwd=REPO,
    )
    try:
        # Started unenrolled: its "agent.started" event waits in the outbox, sync is off.
        await eventually(
            lambda: bool(_pending(data / "agent.db")), timeout=60, what="agent.started queued"
        )
        await eventually(
            lambda: "sync is off" in agent.log_tail(200), timeout=60, what="sync off logged"
        )
        assert agent.alive()

        token = await asyncio.to_thread(enrollment_token, hub, 1)
        argv = [sys.executable, "-m", "agent", "enroll", "--config", str(config)]
        argv += ["--hub", hub.enroll_url, "--token", token, "--device-id", "late-1"]
        out = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=60, cwd=REPO
        )
        assert out.returncode == 0, out.stderr
        assert "no restart needed" in out.stdout, out.stdout

        async with hub.client() as admin:

            async def online_at_hub() -> bool:
                items = (await admin.call("devices.list", {}))["items"]
                return any(d["id"] == "late-1" and d["status"] == "online" for d in items)

            await eventually(
                online_at_hub, timeout=90, what="online at the hub, " + agent.log_tail()
            )
        await eventually(
            lambda: _pending(data / "agent.db") == 0, timeout=90, what="outbox drained"
        )
        assert hub.query("SELECT count(*) FROM events WHERE device_id = 'late-1'")[0][0] >= 1
        assert agent.alive()  # the same process: no restart
    finally:
        agent.stop(timeout=30)
        assert hub.stop() == 0, hub.proc.log_tail() if hub.proc else ""
