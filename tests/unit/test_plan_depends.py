"""Start order by health (``depends_on``) in the pure planner: a table, and properties on the
in-memory engine over any acyclic graph."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.reconcile.executor import Executor, ExecutorOptions
from agent.reconcile.health import HealthState, gate
from agent.reconcile.memrecorder import MemoryRecorder
from agent.reconcile.plan import Readiness, Target, plan
from agent.runtime.base import ObservedContainer
from agent.runtime.memory import MemoryEngine
from bundles.model import BundleSpec, ContainerSpec, Dependency, UpdatePolicy
from tests.unit.test_plan import DEV, actions, bundle, obs

DB = ContainerSpec("db", "reg/db:1")
DB2 = ContainerSpec("db", "reg/db:2")
APP_H = ContainerSpec("app", "reg/app:1", depends_on=(Dependency("db", "service_healthy"),))
APP_H2 = ContainerSpec("app", "reg/app:2", depends_on=(Dependency("db", "service_healthy"),))
APP_S = ContainerSpec("app", "reg/app:1", depends_on=(Dependency("db"),))
IMAGES = {"reg/db:1", "reg/db:2", "reg/app:1", "reg/app:2"}


def _plan(
    target: Target, observed: list[ObservedContainer], health: dict[str, Readiness] | None = None
) -> object:
    return plan(target, observed, IMAGES, device_id=DEV, health=health)


def test_nothing_running_starts_the_dependency_only() -> None:
    p = _plan(bundle("1", DB, APP_H), [])
    assert actions(p) == [("create", "db"), ("start", "db")]
    assert [(w.service, w.dependency) for w in p.waiting] == [("app", "db")]  # type: ignore[attr-defined]
    assert "waiting for db to be created" in p.waiting[0].reason  # type: ignore[attr-defined]


def test_service_started_needs_only_a_running_dependency() -> None:
    assert actions(_plan(bundle("1", DB, APP_S), [obs(DB, "created")])) == [("start", "db")]
    p = _plan(bundle("1", DB, APP_S), [obs(DB)])
    assert actions(p) == [("create", "app"), ("start", "app")]
    assert not p.waiting  # type: ignore[attr-defined]


def test_service_healthy_waits_for_the_agents_verdict() -> None:
    db = obs(DB)
    target = bundle("1", DB, APP_H)
    cases: list[tuple[dict[str, Readiness] | None, str]] = [
        (None, "not probed yet"),
        ({db.id: "starting"}, "(starting)"),
        ({db.id: "unhealthy"}, "(unhealthy)"),
    ]
    for health, why in cases:
        p = _plan(target, [db], health)
        assert actions(p) == [], health
        assert why in p.waiting[0].reason  # type: ignore[attr-defined]
    ready: Readiness
    for ready in ("healthy", "none"):  # "none": no probe at all, so running is enough
        p = _plan(target, [db], {db.id: ready})
        assert actions(p) == [("create", "app"), ("start", "app")]


def test_an_exited_dependent_is_restarted_only_after_its_dependency() -> None:
    target = bundle("1", DB, APP_H)
    observed = [obs(DB, "exited", exit_code=1), obs(APP_H, "exited", exit_code=1)]
    p = _plan(target, observed)
    assert actions(p) == [("start", "db")]
    assert any("not started: waiting for db" in n.reason for n in p.noops)  # type: ignore[attr-defined]


def test_on_update_the_dependent_waits_for_its_recreated_dependency() -> None:
    old_db, old_app = obs(DB), obs(APP_H)
    target = bundle("2", DB2, APP_H2)
    health: dict[str, Readiness] = {old_db.id: "healthy"}
    # The old db's health says nothing about the new one: app keeps its old container.
    p = _plan(target, [old_db, old_app], health)
    assert actions(p) == [("recreate", "db")]
    new_db = obs(DB2, cid="new-db")
    p = _plan(target, [new_db, old_app], {**health, "new-db": "starting"})
    assert actions(p) == []
    p = _plan(target, [new_db, old_app], {**health, "new-db": "healthy"})
    assert actions(p) == [("recreate", "app")]


def test_kill_then_download_takes_the_old_dependent_down_but_creates_it_later() -> None:
    old_db, old_app = obs(DB), obs(APP_H)
    target = bundle("2", DB2, APP_H2, strategy="kill-then-download")
    p = _plan(target, [old_db, old_app], {old_db.id: "healthy"})
    assert ("create", "app") not in actions(p) and ("remove", "app") in actions(p)
    assert ("create", "db") in actions(p)


def test_the_gate_names_the_dependency_a_service_waits_for() -> None:
    db = obs(DB)
    common = dict(
        crashes={}, running_since={}, min_uptime=0.0, crash_limit=3, window=5.0, deadline=10.0
    )
    v = gate(
        ["db", "app"], {"db": db, "app": None}, {"db": HealthState("starting")}, now=11.0,
        waiting={"app": "waiting for db to be healthy (starting)"}, **common,  # type: ignore[arg-type]
    )  # fmt: skip
    assert v.decision == "failed"
    assert "app: waiting for db to be healthy (starting)" in v.reason and "db: starting" in v.reason


# ---------------------------------------------------------------- properties

NAMES = ["s0", "s1", "s2", "s3", "s4", "s5"]


@st.composite
def graphs(draw: st.DrawFn) -> BundleSpec:
    """Any acyclic graph: each service may depend on services drawn before it, under a
    shuffled order so the dependency order is not the alphabetical one."""
    n = draw(st.integers(1, 6))
    order = draw(st.permutations(NAMES))[:n]
    containers = []
    for i, name in enumerate(order):
        deps = draw(st.sets(st.sampled_from(order[:i]), max_size=i)) if i else set()
        containers.append(
            ContainerSpec(
                name,
                draw(st.sampled_from(["reg/a:1", "reg/a:2"])),
                depends_on=tuple(
                    Dependency(d, draw(st.sampled_from(["service_started", "service_healthy"])))
                    for d in sorted(deps)
                ),
            )
        )
    strategy = draw(st.sampled_from(["download-then-kill", "kill-then-download"]))
    return BundleSpec("app", "1.0.0", tuple(containers), update=UpdatePolicy(strategy=strategy))  # type: ignore[arg-type]


def _satisfied(
    dep: Dependency, observed: list[ObservedContainer], target: Target, health: dict[str, str]
) -> bool:
    want = next(s for s in target.services if s.service == dep.service)
    return any(
        c.service == dep.service
        and c.spec_hash == want.spec_hash
        and c.state == "running"
        and (dep.condition == "service_started" or health.get(c.id) in ("healthy", "none"))
        for c in observed
    )


def _drive(
    target: Target,
    engine: MemoryEngine,
    health: dict[str, str],
    data: st.DataObject,
) -> None:
    """Loop runs on the in-memory engine, with each service turning healthy a random number
    of runs after it started (or never probed), asserting on every plan that no create,
    recreate or start step is planned for a service whose dependencies are not satisfied."""
    rec = MemoryRecorder()
    ex = Executor(engine, rec, DEV, ExecutorOptions(retries=0, backoff=0.0))
    names = [s.service for s in target.services]
    delay = {n: data.draw(st.integers(0, 3)) for n in names}
    unprobed = {n for n in names if data.draw(st.booleans())}
    deps = {s.service: s.spec.depends_on for s in target.services}
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    runs_up: dict[str, int] = {}  # container id -> runs it has been running for
    for _ in range(40):
        observed = asyncio.run(engine.list_containers())
        p = plan(target, observed, set(engine.images), device_id=DEV, health=health)  # type: ignore[arg-type]
        for step in p.steps:
            if step.action in ("create", "recreate", "start"):
                for dep in deps[step.service]:
                    assert _satisfied(dep, observed, target, health), (step, dep, health)
        if p.empty and not p.waiting:
            return
        asyncio.run(ex.run(p, target, rec.journal_begin(1, "prop", p.to_dicts())))
        # The health ticks between runs.
        for c in asyncio.run(engine.list_containers()):
            if c.state != "running" or health.get(c.id) in ("healthy", "none"):
                continue
            runs_up[c.id] = runs_up.get(c.id, -1) + 1
            if c.service in unprobed:
                health[c.id] = "none"
            else:
                ok = runs_up[c.id] >= delay[c.service] and rng.random() < 0.8
                health[c.id] = "healthy" if ok else "starting"
    raise AssertionError("did not converge in 40 runs")


@settings(max_examples=200, deadline=None)
@given(spec=graphs(), update=st.booleans(), data=st.data())
def test_no_service_starts_before_its_dependencies_and_all_converge(
    spec: BundleSpec, update: bool, data: st.DataObject
) -> None:
    """From nothing, or as an update from a running older version in which some containers
    differ (whose old containers are healthy: that must not count for the new ones), every
    plan respects the graph, all converge, and each (re)started service started after each
    of its dependencies (the engine's start times)."""
    engine = MemoryEngine(DEV, registry={"reg/a:1": 1, "reg/a:2": 1})
    health: dict[str, str] = {}
    before: set[str] = set()
    if update:
        swap = {"reg/a:1": "reg/a:2", "reg/a:2": "reg/a:1"}
        changed = data.draw(st.sets(st.sampled_from([c.name for c in spec.containers])))
        old = BundleSpec(
            spec.bundle,
            "0.9.0",
            tuple(
                replace(c, image=swap[c.image]) if c.name in changed else c for c in spec.containers
            ),
            update=spec.update,
        )
        _drive(Target.from_spec(old), engine, health, data)
        before = {c.id for c in asyncio.run(engine.list_containers())}
    target = Target.from_spec(spec)
    _drive(target, engine, health, data)
    final = {c.service: c for c in asyncio.run(engine.list_containers())}
    deps = {c.name: c.depends_on for c in spec.containers}
    assert sorted(final) == sorted(deps)
    assert all(c.state == "running" for c in final.values())
    for name, ds in deps.items():
        if final[name].id in before:
            continue  # unchanged and never restarted: nothing to order
        for dep in ds:
            assert (final[dep.service].started_at or 0) < (final[name].started_at or 0)
