"""Update locks and maintenance windows on a real engine, with the real store and the real
update gate (lock files in a directory, local-API locks in the store), and no hub at all:
the device is offline the whole time, which is the point.

The gate's clock is injected, so a window "opens" by moving that clock two hours on rather
than by waiting; each wait below is a bounded poll on the store or the engine.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.precedence import revision_of
from agent.reconcile.executor import ExecutorOptions
from agent.reconcile.loop import LoopOptions, ReconcileLoop
from agent.reconcile.ports import Deployment
from agent.runtime import connect
from agent.runtime.base import Engine
from agent.store import Store, updatelocks
from agent.updategate import UpdateGate
from bundles.model import BundleSpec, ContainerSpec, HealthCheck, UpdatePolicy
from protocol.desired import DesiredState
from tests.harness.engines import EngineHandle
from tests.harness.ports import free_port
from tests.harness.registry import Registry
from tests.harness.wait import eventually

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]

WINDOW = 12.0


@dataclass
class FakeClock:
    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Rig:
    engine: Engine
    store: Store
    loop: ReconcileLoop
    registry: Registry
    port: int
    lock_dir: Path
    clock: FakeClock
    generation: list[int] = field(default_factory=lambda: [0])

    def bundle(self, image: str, version: str, *, probe: bool = True) -> dict[str, Any]:
        hc = HealthCheck("http", port=self.port, interval=0.5, timeout=2.0, retries=2)
        return BundleSpec(
            "hello",
            version,
            (
                ContainerSpec(
                    "web",
                    self.registry.ref(image),
                    env=(("PORT", str(self.port)),),
                    network_mode="host",
                    healthcheck=hc if probe else None,
                ),
            ),
            update=UpdatePolicy(health_window=WINDOW),
        ).to_dict()

    def hub_desired(self, spec: dict[str, Any], **kw: Any) -> DesiredState:
        """A revision as the hub would send it (hub revisions are gated, local ones not)."""
        self.generation[0] += 1
        d = DesiredState(self.generation[0], spec, "hub", **kw)
        assert self.store.put_desired(d)
        self.loop.trigger("desired")
        return d

    async def until(self, what: str, cond: Callable[[], bool]) -> None:
        await eventually(cond, what, timeout=120, interval=0.2)

    def dep(self, d: DesiredState) -> Deployment | None:
        return self.store.deployment(revision_of(d))

    async def settled(self, d: DesiredState) -> Deployment:
        def done() -> bool:
            dep = self.dep(d)
            return dep is not None and dep.status != "applying" and self.loop.idle

        await self.until(f"generation {d.generation} to settle", done)
        dep = self.dep(d)
        assert dep is not None
        return dep

    def gate(self) -> dict[str, Any]:
        return updatelocks.last_gate(self.store) or {}

    async def versions(self) -> list[tuple[str, str]]:
        return [(c.version or "", c.state) for c in await self.engine.list_containers()]


@pytest.fixture
async def rig(
    podman_engine: EngineHandle, registry: Registry, tmp_path: Path
) -> AsyncIterator[Rig]:
    device = f"ug-{uuid.uuid4().hex[:8]}"
    store = Store.open(tmp_path / "agent.db", device_id=device)
    eng = connect(device, podman_engine.url)
    clock = FakeClock()
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    options = LoopOptions(
        poll=0.2,
        min_uptime=1.0,
        crash_limit=3,
        executor=ExecutorOptions(stop_timeout=1.0, backoff=0.2),
    )
    gate = UpdateGate(store, lock_dir, UTC, clock=clock)
    loop = ReconcileLoop(eng, store, store.current_desired, device, options, update_gate=gate)
    task = asyncio.create_task(loop.run())
    try:
        yield Rig(eng, store, loop, registry, free_port(), lock_dir, clock)
    finally:
        loop.stop()
        await asyncio.wait_for(task, 30)
        await eng.close()
        store.close()


async def test_a_window_opening_while_offline_starts_the_update(rig: Rig) -> None:
    first = rig.hub_desired(rig.bundle("sbtest/hello:1.0", "1.0.0"))
    assert (await rig.settled(first)).status == "healthy"

    # A window two hours from the gate's "now", one hour long (UTC: the rig's zone).
    start = datetime.fromtimestamp(rig.clock(), UTC) + timedelta(hours=2)
    start = start.replace(second=0, microsecond=0)
    end = start + timedelta(hours=1)
    window = f"* {start:%H:%M}-{end:%H:%M}"
    second = rig.hub_desired(rig.bundle("sbtest/hello:2.0", "2.0.0"), maintenance_windows=(window,))
    await rig.until("the deferral", lambda: rig.gate().get("state") == "deferred")
    g = rig.gate()
    assert g["kind"] == "window" and g["generation"] == second.generation
    assert g["until"] == f"{start:%Y-%m-%dT%H:%M}+00:00"
    assert g["reason"] == f"outside maintenance window until {g['until']}"
    # It waits: several runs later nothing of 2.0 has started, and 1.0 keeps running.
    for _ in range(3):
        rig.loop.trigger("timer")
        await asyncio.sleep(0.5)
    assert rig.dep(second) is None
    assert await rig.versions() == [("1.0.0", "running")]
    assert rig.loop.last_result is not None and rig.loop.last_result.outcome == "deferred"
    kinds = [e.kind for e in rig.store.events(limit=1000)]
    assert kinds.count("update.deferred") == 1  # said once, not at every re-check

    rig.clock.offset = (start - datetime.now(UTC)).total_seconds() + 60  # inside the window
    assert (await rig.settled(second)).status == "healthy"
    assert await rig.versions() == [("2.0.0", "running")]
    assert rig.gate()["state"] == "clear"


async def test_a_lock_defers_until_released_and_never_blocks_a_rollback(rig: Rig) -> None:
    first = rig.hub_desired(rig.bundle("sbtest/hello:1.0", "1.0.0"))
    assert (await rig.settled(first)).status == "healthy"

    # An app holds the lock through a file in the shared directory.
    (rig.lock_dir / "temp-sensor.lock").write_text("temp-sensor: calibrating\n")
    second = rig.hub_desired(rig.bundle("sbtest/hello:2.0", "2.0.0"))
    await rig.until("the deferral", lambda: rig.gate().get("state") == "deferred")
    assert rig.gate()["reason"].startswith("locked by temp-sensor: calibrating since ")
    for _ in range(3):
        rig.loop.trigger("timer")
        await asyncio.sleep(0.5)
    assert rig.dep(second) is None and await rig.versions() == [("1.0.0", "running")]

    (rig.lock_dir / "temp-sensor.lock").unlink()  # released: applies with no trigger at all
    assert (await rig.settled(second)).status == "healthy"
    assert await rig.versions() == [("2.0.0", "running")]

    # A field tech holds a lock; the operator forces a bad version through it; it fails
    # its health window and rolls back to 2.0 while the lock is still held.
    updatelocks.hold(rig.store, "anna", "on site", "test")
    third = rig.hub_desired(rig.bundle("sbtest/crash:1.0", "3.0.0", probe=False), force=True)
    dep = await rig.settled(third)
    assert dep.status == "rolled_back", dep
    await rig.until(
        "2.0 running again",
        lambda: getattr(rig.store.latest_deployment(), "revision", None) == revision_of(second),
    )
    assert rig.dep(second).status == "healthy"  # type: ignore[union-attr]
    assert [lk.who for lk in updatelocks.held(rig.store)] == ["anna"]
    kinds = [e.kind for e in rig.store.events(limit=1000)]
    assert "rollback" in kinds
