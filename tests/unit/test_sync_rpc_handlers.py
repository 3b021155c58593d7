"""agent_rpc_handlers over the in-memory engine and a real store, through RpcServer.handle."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agent.runtime.base import LABEL_DEVICE, LABEL_SERVICE, CreateRequest
from agent.runtime.memory import MemoryEngine
from agent.store import Store
from agent.sync.rpc import RpcServer
from agent.sync.service import agent_rpc_handlers
from protocol.rpc import RpcRequest, decode_rpc_reply


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

    async def current() -> dict[str, object]:
        return status

    srv = RpcServer(
        None, "dev-1", agent_rpc_handlers(agent, lambda: SimpleNamespace(current_status=current))
    )  # type: ignore[arg-type]

    async def call(req: RpcRequest) -> Any:
        return decode_rpc_reply(await srv.handle(req.verb, req.to_json()))

    r = await call(RpcRequest("restart", "web"))
    assert r.result == {"container": "sb-app-web", "service": "web", "restarted": True}
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


class SlowStop(MemoryEngine):
    """A container that takes its whole stop timeout: the stop waits until released."""

    def __init__(self) -> None:
        super().__init__("dev-1", images={"app:1": 1})
        self.stopping = asyncio.Event()
        self.release = asyncio.Event()
        self.timeouts: list[float] = []

    async def stop(self, ref: str, timeout: float = 10.0) -> None:
        self.timeouts.append(timeout)
        self.stopping.set()
        await self.release.wait()
        await super().stop(ref, timeout)


async def test_a_restart_waits_out_the_stop_and_a_second_one_is_refused(tmp_path: Path) -> None:
    from protocol.api import RESTART_STOP_TIMEOUT

    agent = await _agent(tmp_path)
    slow = SlowStop()
    cid = await slow.create(
        CreateRequest("sb-app-web", "app:1", {LABEL_DEVICE: "dev-1", LABEL_SERVICE: "web"})
    )
    await slow.start(cid)
    agent.engine = slow
    srv = RpcServer(None, "dev-1", agent_rpc_handlers(agent, lambda: None))  # type: ignore[arg-type]

    async def call(req: RpcRequest) -> Any:
        return decode_rpc_reply(await srv.handle(req.verb, req.to_json()))

    first = asyncio.ensure_future(call(RpcRequest("restart", "web")))
    await asyncio.wait_for(slow.stopping.wait(), 30)
    # Operators used to restart twice: the second ask is told the first is still going.
    second = await call(RpcRequest("restart", "web"))
    assert second.error["code"] == "conflict" and "already in progress" in second.error["message"]
    slow.release.set()
    assert (await asyncio.wait_for(first, 30)).result["restarted"] is True
    assert slow.timeouts == [RESTART_STOP_TIMEOUT]  # the engine's kill comes after the grace
    agent.store.close()
