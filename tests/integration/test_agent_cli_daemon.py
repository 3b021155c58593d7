"""The Agent daemon in-process: hooks, desired-state notification, engine seam, clean stop.

The engine is a stand-in object (the runtime has its own engine tests); the store is real.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, MetricsConfig
from agent.daemon import Agent, AlreadyRunning, acquire_lock, running_pid
from agent.runtime.base import Engine
from agent.store import Store
from protocol.desired import DesiredState
from tests.harness.wait import eventually


class StubEngine:
    kind = "podman"
    url = "unix:///stub.sock"

    async def info(self) -> Any:
        raise ConnectionError("stub has no info")

    async def list_containers(self) -> list[Any]:
        return []

    async def close(self) -> None:
        pass


class FakeReconciler:
    def __init__(self) -> None:
        self.pokes: list[str] = []
        self.ran = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self.ran.set()
        await stop.wait()

    def poke(self, reason: str) -> None:
        self.pokes.append(reason)


class StubAgent(Agent):
    async def connect(self) -> Engine:
        return StubEngine()  # type: ignore[return-value]


async def test_agent_runs_hooks_notices_desired_and_stops(tmp_path: Path) -> None:
    cfg = AgentConfig(
        data_dir=tmp_path,
        device_id="daemon-dev",
        device_id_configured=True,
        desired_poll_interval=0.05,
        metrics=MetricsConfig(interval=0.1),
    )
    fake = FakeReconciler()
    agent = StubAgent(cfg, reconciler_factory=lambda a, e: fake)
    hook_saw_stop = asyncio.Event()

    async def hook(a: Agent, stop: asyncio.Event) -> None:
        await stop.wait()
        hook_saw_stop.set()

    agent.add_task(hook)
    seen: list[DesiredState | None] = []
    agent.on_desired_change(seen.append)
    task = asyncio.create_task(agent.run())
    await eventually(lambda: fake.ran.is_set(), "reconciler to start")
    assert running_pid(tmp_path) is not None

    # Another process (here: another connection) applies a bundle ...
    other = Store.open(cfg.db_path, device_id="daemon-dev")
    other.put_local_desired({"bundle": "b", "version": "1.0", "containers": []})
    await eventually(lambda: "desired" in fake.pokes, "the watcher to notice")
    assert seen and seen[-1] is not None and seen[-1].source == "local"

    # ... and an in-process writer notifies directly.
    assert agent.store is not None
    agent.store.put_desired(DesiredState(50, None))
    other.clear_local_desired()
    agent.notify_desired("sync")
    assert fake.pokes[-1] == "sync"
    assert seen[-1] is not None and seen[-1].generation == 50

    await eventually(lambda: agent.store is not None and agent.store.latest_samples(), "a sample")
    agent.request_stop()
    await asyncio.wait_for(task, 30)
    assert hook_saw_stop.is_set()
    assert running_pid(tmp_path) is None
    kinds = [e.kind for e in other.events(limit=100)]
    assert kinds[0] == "agent.started" and kinds[-1] == "agent.stopped"
    assert "engine.connected" in kinds
    other.close()


def test_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    fh = acquire_lock(tmp_path)
    try:
        try:
            acquire_lock(tmp_path)
        except AlreadyRunning as exc:
            assert "another agent" in str(exc)
        else:
            raise AssertionError("second lock was granted")
    finally:
        fh.close()
    acquire_lock(tmp_path).close()


async def test_a_failing_hook_is_reported_at_once_and_the_rest_runs(tmp_path: Path) -> None:
    cfg = AgentConfig(
        data_dir=tmp_path,
        device_id="daemon-dev",
        device_id_configured=True,
        desired_poll_interval=0.05,
        metrics=MetricsConfig(interval=0.05),
    )
    agent = Agent(cfg, connect_engine=False)

    async def broken(a: Agent, stop: asyncio.Event) -> None:
        raise RuntimeError("hook blew up")

    agent.add_task(broken)
    task = asyncio.create_task(agent.run())
    await eventually(
        lambda: (
            agent.store is not None
            and any(e.kind == "agent.task_failed" for e in agent.store.events())
        ),
        "the failure event",
    )
    assert agent.store is not None
    before = len(agent.store.metrics("raw"))
    await eventually(lambda: len(agent.store.metrics("raw")) > before, "metrics to keep flowing")  # type: ignore[union-attr]
    agent.request_stop()
    await asyncio.wait_for(task, 30)


async def test_container_stats_skip_stopped_and_failing(tmp_path: Path) -> None:
    from agent.runtime.base import ContainerStats, ObservedContainer

    def oc(name: str, state: str) -> ObservedContainer:
        return ObservedContainer(
            id=f"id-{name}",
            name=f"sb-{name}",
            service=name,
            bundle="b",
            version="1",
            spec_hash="h",
            device="daemon-dev",
            state=state,  # type: ignore[arg-type]
        )

    class StatsEngine(StubEngine):
        async def list_containers(self) -> list[Any]:
            return [oc("web", "running"), oc("db", "exited"), oc("flaky", "running")]

        async def stats(self, ref: str) -> ContainerStats:
            if ref == "id-flaky":
                raise ConnectionError("gone")
            return ContainerStats(ref, 1.5, 2048, None)

    agent = Agent(AgentConfig(data_dir=tmp_path, device_id="daemon-dev"), connect_engine=False)
    agent.engine = StatsEngine()  # type: ignore[assignment]
    assert await agent._container_stats() == {"web": {"cpu_percent": 1.5, "memory_bytes": 2048.0}}
