"""The wiring the daemon uses: ``agent.add_task(sync_hook)`` on a real ``Agent`` (no engine),
an enrolled credentials file, a permissioned hub: desired state reaches the store and the
desired listeners, RPC status includes the sync view, and stopping the agent stops the leaf."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import nats
import pytest

from agent.config import config_from_dict
from agent.daemon import Agent
from agent.sync import gate
from agent.sync.enroll import credentials_path, save_credentials
from agent.sync.service import read_status_file, sync_hook
from protocol.desired import DesiredState
from protocol.enroll import EnrollReply
from protocol.rpc import RpcRequest, decode_rpc_reply
from protocol.subjects import REPORT_STREAM, REPORT_WILDCARD, rpc
from tests.harness.nats import NatsHub
from tests.harness.wait import eventually
from tests.integration.test_sync_agent import desired_bucket_config

ACCOUNTS = """
accounts {
  SB {
    jetstream: enabled
    users: [
      { user: hub, password: "hub-pw" }
      { user: "dev-5", password: "pw-5", permissions: {
          publish: { allow: ["sb.dev.dev-5.>", "_INBOX.>", "$JS.hub.API.DIRECT.GET.KV_desired.$KV.desired.dev-5"] },
          subscribe: { allow: ["_INBOX.dev-5.>", "sb.desired.dev-5", "sb.dev.dev-5.rpc.>"] } } }
    ]
  }
}
"""


async def test_sync_hook_in_the_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = NatsHub(tmp_path / "hub", extra_conf=ACCOUNTS)
    hub_nc = await nats.connect(hub.url, user="hub", password="hub-pw")
    js = hub_nc.jetstream()
    await js.add_stream(name=REPORT_STREAM, subjects=[REPORT_WILDCARD], duplicate_window=7200)
    kv = await js.create_key_value(desired_bucket_config())
    cfg = config_from_dict({"data_dir": str(tmp_path / "agent"), "device_id": "dev-5"})
    monkeypatch.setattr(gate, "ENROLL_POLL", 0.1)
    agent = Agent(cfg, connect_engine=False)
    agent.add_task(sync_hook)
    seen: list[DesiredState | None] = []
    agent.on_desired_change(seen.append)
    run = asyncio.create_task(agent.run())
    try:
        # Enrolled while the agent runs (the credentials file appears): picked up, no restart.
        await eventually(lambda: agent.store is not None)
        await asyncio.sleep(0.3)
        assert getattr(agent, "sync", None) is None
        save_credentials(
            credentials_path(cfg),
            EnrollReply("dev-5", "dev-5", "pw-5", f"nats-leaf://127.0.0.1:{hub.leaf_port}"),
        )
        await eventually(lambda: getattr(agent, "sync", None) is not None and agent.sync.online)
        rev = await kv.put("dev-5", DesiredState(0, {"bundle": "b", "version": "1.0.0"}).to_json())
        await eventually(lambda: bool(seen) and seen[-1] is not None and seen[-1].generation == rev)

        reply = decode_rpc_reply(
            (
                await hub_nc.request(
                    rpc("dev-5", "status"), RpcRequest("status").to_json(), timeout=5
                )
            ).data
        )
        assert reply.result is not None
        assert reply.result["sync"]["online"] is True
        assert reply.result["desired"]["generation"] == rev
        # "agent.started" and the desired change reached the hub stream through the outbox.
        await eventually(lambda: agent.store is not None and agent.store.outbox_depth() == 0)
        assert (await js.stream_info(REPORT_STREAM)).state.messages >= 1
        leaf_pid = agent.sync.leaf.pid
        # Other processes (the `status` CLI) see the sync view through the status file.
        await eventually(lambda: (read_status_file(cfg.data_dir) or {}).get("online") is True)
    finally:
        agent.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run, 30)
        await hub_nc.close()
        hub.stop()
    final = read_status_file(cfg.data_dir)
    assert final is not None and final["online"] is False and final["last_contact"] is not None
    # Stopping the agent stopped exactly the leaf it started.
    assert leaf_pid is not None and agent.sync.leaf.proc.returncode is not None
    try:
        os.kill(leaf_pid, 0)
        raise AssertionError("leaf still running")
    except ProcessLookupError:
        pass
