"""Restarting one container: stop (the engine kills it after ``stop_timeout``), then start.

One routine for both ways an operator asks (the local HTTP API's ``POST
/v1/containers/{name}/restart`` and the hub's ``restart`` RPC), so they agree on what a
successful restart is.
"""

from __future__ import annotations

import asyncio

from agent.runtime.base import Engine, ObservedContainer

STOP_CHECKS = 10
STOP_CHECK_INTERVAL = 0.2


async def state_since(engine: Engine, cid: str, started_before: float) -> str:
    """ "down", "restarted" (running, started after ``started_before``) or "running"."""
    obs = await engine.inspect(cid)
    if obs is None or obs.state not in ("running", "restarting", "paused", "removing"):
        return "down"
    return "restarted" if (obs.started_at or 0.0) > started_before else "running"


async def restart_container(engine: Engine, c: ObservedContainer, stop_timeout: float) -> None:
    """Stop ``c`` (up to ``stop_timeout`` s of SIGTERM grace, then the engine kills it) and
    start it again; ``EngineError`` (or the engine client's own error) if it did not."""
    # The engine's state is the truth, because two things race a restart: Podman can fail a
    # stop with an error about its own clean-up ("running or paused, refusing to clean up")
    # when the container did stop, and the reconcile loop reacts to the exit by starting
    # the container itself. Either way, a container running with a newer start time has
    # been restarted, which is what was asked.
    before = c.started_at or 0.0
    try:
        await engine.stop(c.id, timeout=stop_timeout)
    except Exception:
        for _ in range(STOP_CHECKS):
            state = await state_since(engine, c.id, before)
            if state == "restarted":
                return
            if state == "down":
                break
            await asyncio.sleep(STOP_CHECK_INTERVAL)
        else:
            raise
    try:
        await engine.start(c.id)
    except Exception:
        if await state_since(engine, c.id, before) != "restarted":
            raise
