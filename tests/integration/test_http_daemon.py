"""The daemon wiring: ``agent.add_task(agent.http.server.serve)`` on a real ``Agent`` (no
engine) serves the API until the agent stops; a busy port is an event, not a crash."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp

from agent.config import AgentConfig, HttpConfig
from agent.daemon import Agent
from agent.http.server import serve
from agent.http.tokens import TokenStore
from tests.harness.ports import free_port
from tests.harness.wait import eventually


def _agent(tmp_path: Path, port: int) -> Agent:
    cfg = AgentConfig(
        data_dir=tmp_path,
        device_id="dev-daemon",
        http=HttpConfig(bind="127.0.0.1", port=port),
    )
    agent = Agent(cfg, connect_engine=False)
    agent.add_task(serve)
    return agent


async def _stop(agent: Agent, run: asyncio.Task[None]) -> None:
    agent.request_stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(run, 30)


async def test_serve_hook_runs_the_api_with_the_agent(tmp_path: Path) -> None:
    port = free_port()
    tokens = TokenStore.in_data_dir(tmp_path)
    _, token = tokens.create("tech", "viewer", created_by="test")
    tokens.close()
    agent = _agent(tmp_path, port)
    run = asyncio.create_task(agent.run())
    try:
        async with aiohttp.ClientSession() as http:

            async def get(path: str) -> tuple[int, Any]:
                headers = {"Authorization": f"Bearer {token}"}
                async with http.get(f"http://127.0.0.1:{port}{path}", headers=headers) as r:
                    return r.status, await r.json()

            async def up() -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    return (await get("/health/live"))[0] == 200
                return False

            deadline = time.monotonic() + 60
            while not await up():
                assert time.monotonic() < deadline, "API did not come up"
                await asyncio.sleep(0.05)
            status, doc = await get("/v1/status")
            assert status == 200
            assert doc["device_id"] == "dev-daemon"
            assert doc["engine"] is None  # connect_engine=False
            assert doc["hub"] == {
                "configured": False,
                "online": None,
                "last_contact": None,
                "unreachable_since": None,
            }
            status, doc = await get("/v1/containers")
            assert status == 503 and doc["error"]["code"] == "unavailable"
    finally:
        await _stop(agent, run)
    # Stopped with the agent: nothing listens any more.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


async def test_busy_port_is_an_event_not_a_crash(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        agent = _agent(tmp_path, port)
        run = asyncio.create_task(agent.run())
        try:
            await eventually(
                lambda: (
                    agent.store is not None
                    and any(e.kind == "http.unavailable" for e in agent.store.events(limit=50))
                ),
                "the http.unavailable event",
            )
            assert not run.done()  # the agent keeps running without its API
        finally:
            await _stop(agent, run)
