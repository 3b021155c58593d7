"""``depends_on`` where it meets the rest: sequences of crashes and restarts between the
health monitor (which remembers verdicts by container id) and the pure planner.

The engine is the in-memory one and time is passed in, so nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from agent.reconcile.executor import Executor, ExecutorOptions
from agent.reconcile.memrecorder import MemoryRecorder
from agent.reconcile.monitor import HealthMonitor
from agent.reconcile.plan import Plan, Target, plan
from agent.runtime.base import ExecResult, ObservedContainer
from agent.runtime.memory import MemoryEngine
from bundles.model import BundleSpec, ContainerSpec, Dependency, HealthCheck, UpdatePolicy

DEV = "dev-seq"
CHECK = HealthCheck("exec", command=("check",), interval=1.0, timeout=1.0, retries=3)
DB = ContainerSpec("db", "reg/db:1", restart="always", healthcheck=CHECK)
APP = ContainerSpec(
    "app", "reg/app:1", restart="always", depends_on=(Dependency("db", "service_healthy"),)
)
TARGET = Target.from_spec(BundleSpec("seq", "1.0.0", (DB, APP), update=UpdatePolicy()))
OK, FAIL = ExecResult(0, "ok"), ExecResult(1, "db is not serving yet")


class Rig:
    def __init__(self) -> None:
        self.engine = MemoryEngine(DEV, registry={"reg/db:1": 1, "reg/app:1": 1})
        self.recorder = MemoryRecorder()
        self.monitor = HealthMonitor(self.engine, self.recorder, interval=1.0)
        self.executor = Executor(
            self.engine, self.recorder, DEV, ExecutorOptions(retries=0, backoff=0.0)
        )
        # The probes stamp their end with the real monotonic clock: start from it, and let
        # time pass faster than it does.
        self.now = time.monotonic()

    def observed(self) -> list[ObservedContainer]:
        return asyncio.run(self.engine.list_containers())

    def by_service(self) -> dict[str, ObservedContainer]:
        return {c.service: c for c in self.observed()}

    def tick(self, seconds: float = 1.5) -> None:
        """Time passes and the monitor probes what is due (as the loop's health tick does)."""
        self.now += seconds
        asyncio.run(self.monitor.tick(TARGET, self.observed(), self.now))

    def plan(self) -> Plan:
        images = {t for i in asyncio.run(self.engine.list_images()) for t in i.tags}
        return plan(TARGET, self.observed(), images, device_id=DEV, health=self.monitor.readiness())

    def run(self) -> Plan:
        p = self.plan()
        if not p.empty:
            run_id = self.recorder.journal_begin(1, "test", p.to_dicts())
            assert asyncio.run(self.executor.run(p, TARGET, run_id)).ok
        return p

    def converge(self) -> None:
        """Run and tick until both run, db healthy (bounded)."""
        for _ in range(20):
            self.run()
            self.tick()
            cs = self.by_service()
            if {s: c.state for s, c in cs.items()} == {"db": "running", "app": "running"}:
                return
        raise AssertionError(f"did not converge: {self.by_service()}")


def _starts(p: Plan) -> list[str]:
    return [s.service for s in p.steps if s.action in ("create", "recreate", "start")]


@pytest.mark.parametrize("seen_down", [True, False], ids=["exit-seen", "restart-unseen"])
def test_a_restarted_dependency_is_not_healthy_on_its_old_verdict(seen_down: bool) -> None:
    """Both crash (the app because its db went away); the db comes back but does not serve
    yet. Its verdict from before the crash must not let the app start: like Docker, a
    container's health starts over when it starts again. ``restart-unseen``: the engine's
    restart policy restarted it before the monitor looked (only started_at tells)."""
    rig = Rig()
    rig.run()  # creates and starts db; app waits
    db_name = rig.by_service()["db"].name
    rig.engine.exec_results[db_name] = OK
    rig.converge()
    assert rig.monitor.readiness()[rig.by_service()["db"].id] == "healthy"

    rig.engine.exec_results[db_name] = FAIL
    rig.engine.crash(db_name)
    rig.engine.crash(rig.by_service()["app"].name)
    if seen_down:
        rig.tick()
        p = rig.run()
        assert _starts(p) == ["db"], p
    else:
        asyncio.run(rig.engine.start(db_name))  # the engine's restart policy, say
    for _ in range(5):  # db runs but never answers: app must wait, across ticks and runs
        rig.tick(0.3)
        p = rig.run()
        assert "app" not in _starts(p), (p, rig.monitor.readiness())
        assert any(w.service == "app" and w.dependency == "db" for w in p.waiting), p
    rig.engine.exec_results[db_name] = OK
    rig.converge()
    cs = rig.by_service()
    assert (cs["db"].started_at or 0) < (cs["app"].started_at or 0)
