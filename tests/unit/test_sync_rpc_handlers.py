"""agent_rpc_handlers over the in-memory engine and a real store, through RpcServer.handle."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agent.runtime.base import LABEL_DEVICE, LABEL_SERVICE, CreateRequest
from agent.runtime.memory import MemoryEngine
from agent.store import Store
from agent.sync.rpc import RpcServer
from agent.sync.service import agent_rpc_handlers
from protocol.messages import RpcRequest, decode_rpc_reply


class Poker:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def poke(self, reason: str) -> None:
        self.reasons.append(reason)


async def _agent(tmp_path: Path) -> Any:
    engine = MemoryEngine("dev-1", images={"app:1": 1})
    cid = await engine.create(
        CreateRequest("sb-app-web", "app:1", {LABEL_DEVICE: "dev-1", LABEL_SERVICE: "web"})
    )
    await engine.start(cid)
    engine.add_foreign("someone-else")
    store = Store.open(tmp_path / "a.db", device_id="dev-1")
    return SimpleNamespace(engine=engine, reconciler=Poker(), store=store)


async def test_handlers(tmp_path: Path) -> None:
    agent = await _agent(tmp_path)
    status = {"online": True}
    srv = RpcServer(
        None, "dev-1", agent_rpc_handlers(agent, lambda: SimpleNamespace(status=lambda: status))
    )  # type: ignore[arg-type]

    async def call(req: RpcRequest) -> Any:
        return decode_rpc_reply(await srv.handle(req.verb, req.to_json()))

    r = await call(RpcRequest("restart", "web"))
    assert r.result == {"container": "sb-app-web", "restarted": True}
    assert any(e.kind == "container.restarted" for e in agent.store.events())
    assert (await call(RpcRequest("logs", "sb-app-web", 10))).result["lines"] == []
    missing = await call(RpcRequest("restart", "someone-else"))  # foreign: never touched
    assert missing.error["code"] == "not_found" and missing.error["field"] == "args.container"
    assert (await call(RpcRequest("reconcile"))).result["triggered"] is True
    assert agent.reconciler.reasons == ["rpc"]
    st = (await call(RpcRequest("status"))).result
    assert st["sync"] == status and st["device_id"] == "dev-1"

    agent.engine = None
    agent.reconciler = None
    assert (await call(RpcRequest("restart", "web"))).error["code"] == "unavailable"
    assert (await call(RpcRequest("reconcile"))).error["code"] == "unavailable"
    agent.store.close()
