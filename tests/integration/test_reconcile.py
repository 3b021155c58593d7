"""The reconciler end to end on real engines, with the real SQLite store.

Each test drives one ``ReconcileLoop`` step by step (reconcile, then health ticks) in a
bounded loop, so nothing waits on wall-clock assertions.
"""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.precedence import revision_of
from agent.reconcile.executor import ExecutorOptions
from agent.reconcile.loop import LoopOptions, ReconcileLoop
from agent.reconcile.ports import Deployment
from agent.runtime import connect
from agent.runtime.base import Engine
from agent.store import Store
from bundles.model import BundleSpec, ContainerSpec, HealthCheck, UpdatePolicy
from tests.harness.engines import EngineHandle, run_cli
from tests.harness.ports import free_port
from tests.harness.registry import Registry

pytestmark = pytest.mark.engine

WINDOW = 12.0  # health window for test bundles: short, but several probe intervals long


@dataclass
class Rig:
    engine: Engine
    store: Store
    loop: ReconcileLoop
    registry: Registry
    handle: EngineHandle
    port: int

    def bundle(self, image: str, version: str, *, probe: bool = True) -> dict[str, Any]:
        hc = (
            HealthCheck("http", port=self.port, interval=0.5, timeout=2.0, retries=2)
            if probe
            else None
        )
        return BundleSpec(
            "hello",
            version,
            (
                ContainerSpec(
                    "web",
                    self.registry.ref(image),
                    env=(("PORT", str(self.port)),),
                    network_mode="host",
                    healthcheck=hc,
                ),
            ),
            update=UpdatePolicy(health_window=WINDOW),
        ).to_dict()

    async def apply(self, spec: dict[str, Any] | None, max_rounds: int = 300) -> Deployment:
        """Set desired state locally, then wait (bounded) until the loop has settled."""
        desired = self.store.put_local_desired(spec)
        self.loop.trigger("desired")
        dep = None
        for _ in range(max_rounds):
            await asyncio.sleep(0.2)
            dep = self.store.deployment(revision_of(desired))
            if dep is not None and dep.status != "applying" and self.loop.idle:
                break
        assert dep is not None
        return dep

    def answer(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=5) as resp:
            return str(resp.read().decode().strip())

    def kinds(self) -> list[str]:
        return [e.kind for e in self.store.events(limit=1000)]


@pytest.fixture
async def rig(engine: EngineHandle, registry: Registry, tmp_path: Path) -> AsyncIterator[Rig]:
    device = f"rc-{uuid.uuid4().hex[:8]}"
    store = Store.open(tmp_path / "agent.db", device_id=device)
    eng = connect(device, engine.url)
    options = LoopOptions(
        poll=0.2,
        min_uptime=1.0,
        crash_limit=3,
        executor=ExecutorOptions(stop_timeout=1.0, backoff=0.2),
    )
    loop = ReconcileLoop(eng, store, store.current_desired, device, options)
    task = asyncio.create_task(loop.run())
    try:
        yield Rig(eng, store, loop, registry, engine, free_port())
    finally:
        loop.stop()
        await asyncio.wait_for(task, 30)
        await eng.close()
        store.close()


async def test_apply_update_empty_and_foreign_untouched(rig: Rig) -> None:
    image = rig.registry.ref("sbtest/hello:1.0")
    image2 = rig.registry.ref("sbtest/hello:2.0")
    await rig.engine.remove_image(image)  # so the agent pulls it
    await rig.engine.pull(image2)
    foreign = run_cli(rig.handle, "create", "--label", "sbtest.owner=test_reconcile",
                      "--network", "host", image2).strip()  # fmt: skip

    dep = await rig.apply(rig.bundle("sbtest/hello:1.0", "1.0.0"))
    assert dep.status == "healthy", dep
    assert rig.answer() == "1.0"
    ours = await rig.engine.list_containers()
    assert [(c.service, c.state) for c in ours] == [("web", "running")]

    dep = await rig.apply(rig.bundle("sbtest/hello:2.0", "2.0.0"))
    assert dep.status == "healthy", dep
    assert rig.answer() == "2.0"
    ours2 = await rig.engine.list_containers()
    assert len(ours2) == 1 and ours2[0].id != ours[0].id and ours2[0].version == "2.0.0"
    assert await rig.engine.image(image) is not None  # 1.0 kept: it is the rollback target

    dep = await rig.apply(None)
    assert dep.status == "healthy", dep
    assert await rig.engine.list_containers() == []
    kinds = rig.kinds()
    assert kinds.count("deployment.healthy") == 3
    assert "pull.done" in kinds and "container.removed" in kinds
    # Used by neither the current (empty) nor the previous (2.0) deployment: pruned.
    assert "image.pruned" in kinds and await rig.engine.image(image) is None
    assert await rig.engine.image(image2) is not None
    # The foreign container was never touched.
    assert foreign in run_cli(rig.handle, "ps", "-a", "-q", "--no-trunc")


@pytest.mark.parametrize(
    ("bad_image", "probe", "why"),
    [("sbtest/unhealthy:1.0", False, "unhealthy"), ("sbtest/crash:1.0", False, "crash-looping")],
    ids=["unhealthy", "crash"],
)
async def test_failed_update_rolls_back_to_last_healthy(
    rig: Rig, bad_image: str, probe: bool, why: str
) -> None:
    good = await rig.apply(rig.bundle("sbtest/hello:1.0", "1.0.0"))
    assert good.status == "healthy", good

    bad = await rig.apply(rig.bundle(bad_image, "1.1.0", probe=probe))
    assert bad.status == "rolled_back", bad
    assert rig.answer() == "1.0"
    ours = await rig.engine.list_containers()
    assert [(c.version, c.state) for c in ours] == [("1.0.0", "running")]
    assert why in (bad.reason or ""), bad.reason
    events = rig.store.events(limit=1000)
    rollback = [e for e in events if e.kind == "rollback"]
    assert rollback and "1.0.0" in rollback[0].message
    assert rig.store.deployment(good.revision).status == "healthy"  # type: ignore[union-attr]
    # The rollback needed no network: its run pulled nothing (the old images were kept).
    runs = rig.store.journal(limit=50)
    back = [r for r in runs if "rollback" in r.trigger]
    assert back and all(s["action"] != "pull" for r in back for s in r.plan)
    # The failed generation is not retried on later runs.
    for _ in range(3):
        rig.loop.trigger("timer")
        await asyncio.sleep(0.5)
    ours_after = await rig.engine.list_containers()
    assert [c.id for c in ours_after] == [c.id for c in ours]


async def test_disk_budget_refuses_pull_cleanly(rig: Rig) -> None:
    image = rig.registry.ref("sbtest/hello:2.0")
    await rig.engine.remove_image(image)
    rig.loop.executor.options = ExecutorOptions(image_budget=1000, stop_timeout=1.0, backoff=0.2)
    dep = await rig.apply(rig.bundle("sbtest/hello:2.0", "2.0.0"))
    events = rig.store.events(limit=1000)
    refused = [e for e in events if e.kind == "disk.refused"]
    assert refused and "image budget" in refused[0].message
    assert await rig.engine.list_containers() == []
    assert await rig.engine.image(image) is None
    assert dep.status == "failed" and "budget" in (dep.reason or ""), dep
