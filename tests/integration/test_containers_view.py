"""`/v1/containers` words (agent/http/containers.py) against real Podman and Docker: a capped
container's memory limit is its cap, not the host's RAM the engine's stats may report, and
a container without a health check shows the health the reconcile loop judged (what
`status`, the hub and the TUI show), not the engine's "none"."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.http.containers import StatsCache, describe, judged_health
from agent.runtime import connect
from agent.runtime.base import CreateRequest, Engine
from agent.store import Store
from tests.harness.engines import EngineHandle
from tests.harness.registry import Registry
from tests.integration.test_runtime import labels

pytestmark = pytest.mark.engine
CAP = 32 * 1024 * 1024


@pytest.fixture
async def eng(engine: EngineHandle) -> AsyncIterator[Engine]:
    e = connect(f"cv-{uuid.uuid4().hex[:8]}", engine.url)
    try:
        yield e
    finally:
        for c in await e.list_containers():
            await e.remove(c.id)
        await e.close()


async def test_memory_limit_is_the_cap_and_health_is_the_judged_one(
    eng: Engine, registry: Registry, tmp_path: Path
) -> None:
    image = registry.ref("sbtest/pull:1.0")
    await eng.pull(image)
    cid = await eng.create(
        CreateRequest(
            name=f"cv-{uuid.uuid4().hex[:8]}",
            image=image,
            labels=labels(eng.device_id),
            args=("/bin/sh", "-c", "sleep 600"),
            network_mode="none",
            restart="no",
            memory=CAP,
        )
    )
    await eng.start(cid)
    c = next(x for x in await eng.list_containers() if x.id == cid)
    assert c.memory_limit == CAP and c.health == "none"  # no health check of its own

    # What the reconcile loop saved for it: healthy after its health window.
    store = Store.open(tmp_path / "agent.db", device_id="view-dev")
    store.save_observed([{"id": cid, "name": "web", "health": "healthy"}])
    ctx: Any = SimpleNamespace(get_engine=lambda: eng, store=store)
    stats = await StatsCache().get(ctx, c)
    assert stats is not None and stats["memory_limit"] == CAP, stats
    shown = describe(c, stats, await judged_health(ctx))
    store.close()
    assert shown["health"] == "healthy"
    assert describe(c, stats, {})["health"] == "none"  # nothing judged yet: the engine's word
