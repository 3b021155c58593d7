"""``depends_on`` where it meets the rest: sequences of crashes and restarts between the
health monitor (which remembers verdicts by container id) and the pure planner.

The engine is the in-memory one and time is passed in, so nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from agent.reconcile.executor import Executor, ExecutorOptions
from agent.reconcile.health import HealthState, gate
from agent.reconcile.memrecorder import MemoryRecorder
from agent.reconcile.monitor import HealthMonitor
from agent.reconcile.plan import Plan, Target, plan
from agent.runtime.base import ExecResult, ObservedContainer
from agent.runtime.memory import MemoryEngine
from bundles.model import (
    BundleSpec,
    ContainerSpec,
    Dependency,
    DependencyCondition,
    HealthCheck,
    UpdatePolicy,
)

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
        return plan(
            TARGET,
            self.observed(),
            images,
            device_id=DEV,
            health=self.monitor.readiness(self.observed()),
        )

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


@pytest.mark.parametrize("how", ["exit-seen", "restart-unseen", "restart-then-plan"])
def test_a_restarted_dependency_is_not_healthy_on_its_old_verdict(how: str) -> None:
    """Both crash (the app because its db went away); the db comes back but does not serve
    yet. Its verdict from before the crash must not let the app start: like Docker, a
    container's health starts over when it starts again. ``restart-unseen``: the engine's
    restart policy restarted it before the monitor looked (only StartedAt tells);
    ``restart-then-plan``: and a run plans before the monitor's next tick."""
    rig = Rig()
    rig.run()  # creates and starts db; app waits
    db_name = rig.by_service()["db"].name
    rig.engine.exec_results[db_name] = OK
    rig.converge()
    assert rig.monitor.readiness(rig.observed())[rig.by_service()["db"].id] == "healthy"

    rig.engine.exec_results[db_name] = FAIL
    rig.engine.crash(db_name)
    rig.engine.crash(rig.by_service()["app"].name)
    if how == "exit-seen":
        rig.tick()
        p = rig.run()
        assert _starts(p) == ["db"], p
    else:
        asyncio.run(rig.engine.start(db_name))  # the engine's restart policy, say
    if how == "restart-then-plan":
        p = rig.run()
        assert "app" not in _starts(p), (p, rig.monitor.readiness(rig.observed()))
    for _ in range(5):  # db runs but never answers: app must wait, across ticks and runs
        rig.tick(0.3)
        p = rig.run()
        assert "app" not in _starts(p), (p, rig.monitor.readiness(rig.observed()))
        assert any(w.service == "app" and w.dependency == "db" for w in p.waiting), p
    rig.engine.exec_results[db_name] = OK
    rig.converge()
    cs = rig.by_service()
    assert (cs["db"].started_at or 0) < (cs["app"].started_at or 0)


# ---------------------------------------------------------------- any sequence (state machine)


# Three bundle versions over the same three services: v1 (the hub's), v2 (an update: db and
# app change), v3 (a local override: only db changes, and worker's dependency turns healthy).
# db has a probe; app depends on db service_healthy; worker on app service_started (v1, v2)
# or service_healthy with no probe at all on app (v3: running is all there is to wait for).
def _version(v: str, db_image: str, app_image: str, worker_on: DependencyCondition) -> Target:
    db = replace(DB, image=db_image)
    app = replace(APP, image=app_image)
    worker = ContainerSpec(
        "worker", "reg/worker:1", restart="always", depends_on=(Dependency("app", worker_on),)
    )
    return Target.from_spec(BundleSpec("seq", v, (db, app, worker), update=UpdatePolicy()))


VERSIONS = {
    "v1": _version("1.0.0", "reg/db:1", "reg/app:1", "service_started"),
    "v2": _version("2.0.0", "reg/db:2", "reg/app:2", "service_started"),
    "v3": _version("3.0.0", "reg/db:3", "reg/app:2", "service_healthy"),
}
ALL_IMAGES = {"reg/db:1", "reg/db:2", "reg/db:3", "reg/app:1", "reg/app:2", "reg/worker:1"}


class DependsMachine(RuleBasedStateMachine):
    """Any sequence of update, rollback, local override, clear (each a change of target),
    agent restart (the monitor's memory lost), crashes (seen or restarted by the engine before
    anyone looked; all at once: a blackout), a db that serves or stops serving, probe ticks
    and runs. On every plan, a
    create, recreate or start of a service needs each dependency's container for this
    target running, and for ``service_healthy`` with a probe, *proven* healthy by a probe that
    passed since it last started (recorded at the engine, not taken from the monitor)."""

    def __init__(self) -> None:
        super().__init__()
        self.rig = Rig()
        self.rig.engine.registry = {i: 1 for i in ALL_IMAGES}
        self.target = VERSIONS["v1"]
        self.proven: set[tuple[str, float | None]] = set()  # (container id, its started_at)
        engine = self.rig.engine
        real_exec = engine.exec

        async def exec_and_note(ref: str, argv: Sequence[str], timeout: float) -> ExecResult:
            res = await real_exec(ref, argv, timeout)
            c = next(c for c in await engine.list_containers() if ref in (c.id, c.name))
            if res.exit_code == 0:
                self.proven.add((c.id, c.started_at))
            return res

        engine.exec = exec_and_note  # type: ignore[method-assign]

    def _serving(self, ok: bool) -> None:
        for c in self.rig.observed():
            if c.service == "db":
                self.rig.engine.exec_results[c.name] = OK if ok else FAIL

    @rule(version=st.sampled_from(sorted(VERSIONS)))
    def switch(self, version: str) -> None:
        """update / rollback / override / clear: the lifecycle's choice of target."""
        self.target = VERSIONS[version]

    @rule()
    def agent_restart(self) -> None:
        self.rig.monitor = HealthMonitor(self.rig.engine, self.rig.recorder, interval=1.0)

    @rule(service=st.sampled_from(["db", "app", "worker"]), restarted=st.booleans())
    def crash(self, service: str, restarted: bool) -> None:
        for c in self.rig.observed():
            if c.service == service and c.state == "running":
                self.rig.engine.crash(c.name)
                if restarted:  # the engine's own restart policy, before anyone looked
                    asyncio.run(self.rig.engine.start(c.name))

    @rule(restarted=st.booleans(), serving=st.booleans())
    def blackout(self, restarted: bool, serving: bool) -> None:
        """Everything dies at once (power, the engine restarting); db comes back serving or
        not yet."""
        self._serving(serving)
        for c in self.rig.observed():
            if c.state == "running":
                self.rig.engine.crash(c.name)
        if restarted:
            for c in self.rig.observed():
                asyncio.run(self.rig.engine.start(c.name))

    @rule(ok=st.booleans())
    def db_serves(self, ok: bool) -> None:
        self._serving(ok)

    @rule(seconds=st.sampled_from([0.3, 1.5]))
    def tick(self, seconds: float) -> None:
        self.rig.now += seconds
        asyncio.run(self.rig.monitor.tick(self.target, self.rig.observed(), self.rig.now))

    @rule()
    def run(self) -> None:
        self._serving_new()
        observed = self.rig.observed()
        images = {t for i in asyncio.run(self.rig.engine.list_images()) for t in i.tags}
        p = plan(
            self.target,
            observed,
            images,
            device_id=DEV,
            health=self.rig.monitor.readiness(observed),
        )
        self._check(p, observed)
        if not p.empty:
            run_id = self.rig.recorder.journal_begin(1, "machine", p.to_dicts())
            asyncio.run(self.rig.executor.run(p, self.target, run_id))

    def _serving_new(self) -> None:
        """A db container created since the last look serves like the others."""
        known = self.rig.engine.exec_results
        serving = all(r.exit_code == 0 for r in known.values()) if known else True
        for c in self.rig.observed():
            if c.service == "db" and c.name not in known:
                known[c.name] = OK if serving else FAIL

    def _check(self, p: Plan, observed: list[ObservedContainer]) -> None:
        specs = {s.service: s for s in self.target.services}
        for step in p.steps:
            if step.action not in ("create", "recreate", "start"):
                continue
            for dep in specs[step.service].spec.depends_on:
                want = specs[dep.service]
                up = [
                    c
                    for c in observed
                    if c.service == dep.service
                    and c.spec_hash == want.spec_hash
                    and c.state == "running"
                ]
                assert up, (step, dep, observed)
                if dep.condition == "service_healthy" and want.spec.healthcheck is not None:
                    assert any((c.id, c.started_at) in self.proven for c in up), (
                        f"{step.service} {step.action} before {dep.service} proved healthy "
                        f"since it last started",
                        p,
                    )

    def teardown(self) -> None:
        """Liveness: once nothing disturbs it and db serves, it converges, in order."""
        self._serving(True)
        self.rig.engine.exec_results.clear()  # every db serves from now on (exec default: ok)
        for _ in range(30):
            self.run()
            self.tick(1.5)
            cs = {c.service: c for c in self.rig.observed()}
            hashes = {s.service: s.spec_hash for s in self.target.services}
            if all(
                c.state == "running" and c.spec_hash == hashes[s] for s, c in cs.items()
            ) and sorted(cs) == sorted(hashes):
                break
        else:
            raise AssertionError(f"did not converge: {self.rig.observed()}")
        p = plan(
            self.target,
            self.rig.observed(),
            ALL_IMAGES,
            device_id=DEV,
            health=self.rig.monitor.readiness(self.rig.observed()),
        )
        assert p.empty and not p.waiting, p


DependsMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_any_sequence_keeps_the_start_order = DependsMachine.TestCase


# ---------------------------------------------------------------- no deadlock: the gate decides

SERVICES = ["db", "app", "worker"]


@settings(max_examples=300, deadline=None)
@given(
    held=st.sets(st.sampled_from(SERVICES[1:])),
    states=st.fixed_dictionaries(
        {s: st.sampled_from([None, "created", "exited", "running"]) for s in SERVICES}
    ),
    status=st.fixed_dictionaries(
        {s: st.sampled_from([None, "starting", "healthy", "unhealthy"]) for s in SERVICES}
    ),
    crashes=st.fixed_dictionaries({s: st.integers(0, 4) for s in SERVICES}),
    now=st.floats(0.0, 20.0),
)
def test_a_service_held_for_its_dependency_is_never_healthy_and_fails_by_the_deadline(
    held: set[str],
    states: dict[str, str | None],
    status: dict[str, str | None],
    crashes: dict[str, int],
    now: float,
) -> None:
    """Whatever else holds, while a service waits for a dependency (no running container of
    its own) the deployment is never healthy, and once the window has run out it has failed:
    no deadlock. When the window is the reason, the reason names what each waits for."""
    containers = {
        s: None
        if st_ is None
        else ObservedContainer(
            id=f"id-{s}", name=s, service=s, bundle="b", version="1", spec_hash="h",
            device=DEV, state=st_, exit_code=1 if st_ == "exited" else None,  # type: ignore[arg-type]
        )
        for s, st_ in states.items()
    }  # fmt: skip
    health = {s: None if h is None else HealthState(h) for s, h in status.items()}  # type: ignore[arg-type]
    waiting = {s: f"waiting for db to be healthy (case {s})" for s in held}
    v = gate(
        SERVICES, containers, health, crashes, now=now, deadline=10.0,
        running_since={s: 0.0 for s in SERVICES}, min_uptime=1.0, crash_limit=3,
        window=10.0, waiting=waiting,
    )  # fmt: skip
    blocked = [s for s in held if states[s] != "running"]
    if blocked:
        assert v.decision != "healthy", v
    if now >= 10.0:
        assert v.decision != "wait", v
    if v.decision == "failed" and v.reason.startswith("not healthy within"):
        for s in blocked:
            assert f"{s}: {waiting[s]}" in v.reason, v
