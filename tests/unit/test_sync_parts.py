"""Pure parts of agent.sync: RPC dispatch and error mapping, log fitting, leaf config,
heartbeat building, link state, enrollment helpers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agent.errors import EngineError
from agent.store import Store
from agent.sync.enroll import hub_url, load_credentials, save_credentials
from agent.sync.errors import EnrollError, RpcFailure
from agent.sync.heartbeat import heartbeat_from_status
from agent.sync.leaf import LeafSettings, remote_url, render_config
from agent.sync.link import LinkState
from agent.sync.rpc import RpcHandlers, RpcServer, fit_lines
from protocol.enroll import EnrollReply
from protocol.heartbeat import decode_heartbeat
from protocol.rpc import RpcRequest, decode_rpc_reply


def _server(**over: Any) -> RpcServer:
    async def slow() -> dict[str, Any]:
        await asyncio.sleep(10)
        return {}

    def boom(container: str) -> dict[str, Any]:
        raise ValueError("kaput")

    def engine_down(container: str, tail: int) -> list[str]:
        raise EngineError("socket gone")

    handlers = RpcHandlers(
        reconcile=over.get("reconcile", slow),
        restart=over.get("restart", boom),
        logs=over.get("logs", engine_down),
        status=over.get("status", lambda: {"ok": True}),
    )
    return RpcServer(None, "dev-1", handlers, timeout=0.2)  # type: ignore[arg-type]


async def test_rpc_error_mapping() -> None:
    srv = _server()
    ok = decode_rpc_reply(await srv.handle("status", RpcRequest("status").to_json()))
    assert ok.result == {"ok": True}
    cases = {
        ("reconcile", RpcRequest("reconcile").to_json()): "unavailable",  # timed out
        ("restart", RpcRequest("restart", "web").to_json()): "internal",
        ("logs", RpcRequest("logs", "web", 5).to_json()): "unavailable",
        ("nope", b'{"v":1}'): "invalid",
        ("status", b"garbage"): "bad_request",
    }
    for (verb, body), code in cases.items():
        reply = decode_rpc_reply(await srv.handle(verb, body))
        assert reply.error is not None and reply.error["code"] == code, (verb, reply)
    assert srv.counts["invalid"] == 2 and srv.counts["failed"] == 3


async def test_rpc_failure_names_field() -> None:
    def missing(container: str) -> dict[str, Any]:
        raise RpcFailure("not_found", f"no container {container}", "args.container")

    srv = _server(restart=missing)
    reply = decode_rpc_reply(await srv.handle("restart", RpcRequest("restart", "db").to_json()))
    assert reply.error == {
        "code": "not_found",
        "message": "no container db",
        "field": "args.container",
    }


async def test_rpc_logs_reply_fits_one_message() -> None:
    srv = _server(logs=lambda c, n: ["x" * 2000] * 1000)
    reply = decode_rpc_reply(await srv.handle("logs", RpcRequest("logs", "web", 1000).to_json()))
    assert reply.result is not None and reply.result["truncated"] is True
    assert 0 < len(reply.result["lines"]) < 1000


def test_fit_lines_keeps_newest() -> None:
    lines, cut = fit_lines(["a", "b", "c"], budget=8)
    assert cut and lines == ["b", "c"]
    assert fit_lines(["a"], budget=100) == (["a"], False)


def test_leaf_config(tmp_path: Path) -> None:
    assert (
        remote_url("nats-leaf://hub.example:7422", "dev-1", "p@ss/w:rd")
        == "nats-leaf://dev-1:p%40ss%2Fw%3Ard@hub.example:7422"
    )
    s = LeafSettings("dev-1", tmp_path, "nats-leaf://hub:7422", user="dev-1", password="pw")
    conf = json.loads(render_config(s, 4333, tmp_path / "leaf.log", 8333))
    assert conf["http"] == "127.0.0.1:8333"
    assert conf["listen"] == "127.0.0.1:4333"
    assert conf["leafnodes"]["reconnect"] == "1s"
    assert conf["leafnodes"]["remotes"][0]["url"] == "nats-leaf://dev-1:pw@hub:7422"
    assert conf["leafnodes"]["remotes"][0]["compression"] == "s2_fast"
    assert "jetstream" not in conf  # the leaf stores nothing; JetStream is the hub's
    with pytest.raises(Exception, match="host:port"):
        remote_url("nats-leaf://hub", None, None)


def test_heartbeat_from_store_status(tmp_path: Path) -> None:
    with Store.open(tmp_path / "a.db", device_id="dev-1") as store:
        store.event("x", "y")
        store.save_observed(
            [
                {"name": "web", "state": "running", "health": "healthy"},
                {"name": "db", "state": "running", "health": "unhealthy"},
                {"name": "job", "state": "exited", "health": "none"},
            ]
        )
        store.record_samples(1.0, {"cpu.percent": 12.3456789, "container.web.cpu": 1.0})
        hb = heartbeat_from_status("dev-1", store.status_summary())
    back = decode_heartbeat(hb.to_json(), subject_device="dev-1")
    assert (back.containers_total, back.containers_running, back.containers_unhealthy) == (3, 2, 1)
    assert {c.name for c in back.containers} == {"db", "job"}  # only those needing attention
    assert back.metrics == {"cpu.percent": 12.35}
    assert back.last_seq >= 2 and back.outbox_pending >= 2


async def test_link_state_transitions() -> None:
    link = LinkState("dev-1")
    assert not link.online and not await link.wait_online(0.01)
    link.contact()
    assert link.online and link.epoch == 1 and link.last_contact is not None
    link.lost("cut")
    assert not link.online and link.last_error == "cut"
    link.contact()
    assert link.epoch == 2 and await link.wait_online(0.01)


def test_enroll_helpers(tmp_path: Path) -> None:
    assert hub_url("hub:4222", "enroll", "s3cret") == "nats://enroll:s3cret@hub:4222"
    assert hub_url("nats://u:p@hub:4222", "enroll", "x") == "nats://u:p@hub:4222"
    assert hub_url("[::1]:4222", "enroll", "pw") == "nats://enroll:pw@[::1]:4222"
    assert remote_url("nats-leaf://[::1]:7422", "d", "p") == "nats-leaf://d:p@[::1]:7422"
    for bad in ("hub", "hub:abc", "hub:99999"):
        with pytest.raises(EnrollError):
            hub_url(bad, None)
    path = tmp_path / "creds.json"
    reply = EnrollReply("dev-1", "dev-1", "pw", "nats-leaf://hub:7422")
    save_credentials(path, reply)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_credentials(path) == reply
    path.write_text("{}")
    with pytest.raises(EnrollError):
        load_credentials(path)
