"""The agent finding its engine at start: a socket that appears late is found within the
backoff's first steps (1, 2, 4 ... s), not after a fixed 30 s wait. Real engine, real store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.daemon import Agent, engine_retry_delay
from tests.harness.engines import EngineHandle
from tests.harness.wait import eventually

pytestmark = [pytest.mark.engine]


def _events(agent: Agent, kind: str) -> list[Any]:
    return [] if agent.store is None else [e for e in agent.store.events() if e.kind == kind]


async def test_an_engine_that_appears_late_is_retried_with_backoff(
    podman_engine: EngineHandle, tmp_path: Path
) -> None:
    # The configured socket does not exist yet (an engine still starting beside the agent).
    late = tmp_path / "engine.sock"
    cfg = AgentConfig(
        data_dir=tmp_path / "data",
        device_id="late-engine",
        device_id_configured=True,
        engine_socket=f"unix://{late}",
    )
    agent = Agent(cfg, reconciler_factory=None)
    task = asyncio.create_task(agent.run())
    try:
        await eventually(
            lambda: _events(agent, "engine.unavailable"), "engine.unavailable", timeout=90
        )
        late.symlink_to(podman_engine.socket)
        (ev,) = await eventually(
            lambda: _events(agent, "engine.connected"), "engine.connected", timeout=90
        )
        delays = ev.data["retry_delays"]
        # Every wait followed the schedule, starting near 1 s (the old code waited 30 s).
        assert delays == [engine_retry_delay(i) for i in range(1, len(delays) + 1)]
        assert delays[0] == 1.0
        assert ev.data["attempts"] == len(delays) + 1
        assert agent.engine is not None and agent.engine.kind == "podman"
    finally:
        agent.request_stop()
        await asyncio.wait_for(task, 60)
