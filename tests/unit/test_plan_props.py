"""Planner properties on a simulated engine: plans converge, re-planning is empty, and a run
cut off at any step converges on the next one. Foreign containers are never touched."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import EngineError
from agent.reconcile.executor import Executor, ExecutorOptions
from agent.reconcile.memrecorder import MemoryRecorder
from agent.reconcile.plan import Target, container_name, plan
from agent.runtime.memory import MemContainer, MemoryEngine
from bundles.model import BundleSpec, ContainerSpec, UpdatePolicy, UpdateStrategy

DEV = "dev-p"
SERVICES = ("web", "db", "cache", "old")
IMAGES = ("reg/a:1", "reg/a:2", "reg/b:1")
STATES = ("created", "running", "exited", "dead", "paused", "restarting")
RESTARTS = ("no", "always", "on-failure", "unless-stopped")

container_specs = st.builds(
    ContainerSpec,
    name=st.sampled_from(SERVICES[:3]),
    image=st.sampled_from(IMAGES),
    restart=st.sampled_from(RESTARTS),
    env=st.sampled_from([(), (("MODE", "x"),)]),
)


@st.composite
def targets(draw: st.DrawFn) -> Target:
    if draw(st.booleans()) and draw(st.booleans()):
        return Target(None, None)
    specs = draw(st.lists(container_specs, max_size=3, unique_by=lambda c: c.name))
    strategies: list[UpdateStrategy] = ["download-then-kill", "kill-then-download"]
    strategy = draw(st.sampled_from(strategies))
    return Target.from_spec(
        BundleSpec("app", "1.0.0", tuple(specs), update=UpdatePolicy(strategy=strategy))
    )


@st.composite
def engines(draw: st.DrawFn, target: Target) -> MemoryEngine:
    engine = MemoryEngine(DEV, registry={i: 100 for i in IMAGES})
    for image in draw(st.lists(st.sampled_from(IMAGES), unique=True)):
        engine.images[image] = 100
    wanted = {s.service: s for s in target.services}
    n = draw(st.integers(0, 5))
    for i in range(n):
        service = draw(st.sampled_from(SERVICES))
        matches = service in wanted and draw(st.booleans())
        spec_hash = wanted[service].spec_hash if matches else draw(st.sampled_from(["h1", "h2"]))
        state = draw(st.sampled_from(STATES))
        cid = f"c{i}"
        # Real engines never hold two containers under one name.
        name = container_name(DEV, service, spec_hash)
        if any(c.name == name for c in engine.containers.values()):
            name = f"{name}-{i}"
        image = draw(st.sampled_from(IMAGES))
        engine.images.setdefault(image, 100)
        engine.containers[cid] = MemContainer(
            cid,
            name,
            image,
            {
                "io.signalbeam.device": DEV,
                "io.signalbeam.bundle": draw(st.sampled_from(["app", "app", "other"])),
                "io.signalbeam.service": service,
                "io.signalbeam.spec-hash": spec_hash,
            },
            restart=draw(st.sampled_from(RESTARTS)),
            state=state,
            exit_code=draw(st.sampled_from([0, 1])) if state == "exited" else None,
            created_at=float(i),
        )
    for j in range(draw(st.integers(0, 2))):
        engine.add_foreign(f"foreign-{j}", state=draw(st.sampled_from(STATES)))
    return engine


def _snapshot_foreign(engine: MemoryEngine) -> dict[str, tuple[str, str]]:
    return {
        c.id: (c.name, c.state)
        for c in engine.containers.values()
        if c.labels.get("io.signalbeam.device") != DEV
    }


async def _converge(engine: MemoryEngine, target: Target, rounds: int = 4) -> None:
    rec = MemoryRecorder()
    ex = Executor(engine, rec, DEV, ExecutorOptions(retries=0, backoff=0.0))
    for _ in range(rounds):
        p = plan(target, await engine.list_containers(), set(engine.images), device_id=DEV)
        if p.empty:
            return
        await ex.run(p, target, rec.journal_begin(1, "prop", p.to_dicts()))


def _assert_converged(engine: MemoryEngine, target: Target) -> None:
    ours = [c for c in engine.containers.values() if c.labels.get("io.signalbeam.device") == DEV]
    wanted = {s.service: s.spec_hash for s in target.services}
    assert sorted(c.labels["io.signalbeam.service"] for c in ours) == sorted(wanted)
    for c in ours:
        assert c.labels["io.signalbeam.spec-hash"] == wanted[c.labels["io.signalbeam.service"]]
        assert c.state != "dead"


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_one_plan_reaches_desired_and_replanning_is_empty(data: st.DataObject) -> None:
    target = data.draw(targets())
    engine = data.draw(engines(target))
    foreign = _snapshot_foreign(engine)
    p = plan(target, asyncio.run(engine.list_containers()), set(engine.images), device_id=DEV)
    rec = MemoryRecorder()
    ex = Executor(engine, rec, DEV, ExecutorOptions(retries=0, backoff=0.0))
    result = asyncio.run(ex.run(p, target, rec.journal_begin(1, "prop", p.to_dicts())))
    assert result.ok, result.reason
    _assert_converged(engine, target)
    assert _snapshot_foreign(engine) == foreign
    again = plan(target, asyncio.run(engine.list_containers()), set(engine.images), device_id=DEV)
    assert again.empty, again.steps


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_run_cut_off_at_any_step_converges_on_the_next(data: st.DataObject) -> None:
    target = data.draw(targets())
    engine = data.draw(engines(target))
    foreign = _snapshot_foreign(engine)
    cut_at = data.draw(st.integers(0, 8))
    calls = [0]

    def fault(op: str, ref: str) -> None:
        if op == "list":
            return
        calls[0] += 1
        if calls[0] == cut_at + 1:
            raise EngineError(f"simulated crash during {op} {ref}")

    engine.fault = fault
    p = plan(target, asyncio.run(engine.list_containers()), set(engine.images), device_id=DEV)
    rec = MemoryRecorder()
    ex = Executor(engine, rec, DEV, ExecutorOptions(retries=0, backoff=0.0))
    asyncio.run(ex.run(p, target, rec.journal_begin(1, "prop", p.to_dicts())))
    engine.fault = None  # the agent comes back
    asyncio.run(_converge(engine, target))
    _assert_converged(engine, target)
    assert _snapshot_foreign(engine) == foreign
    again = plan(target, asyncio.run(engine.list_containers()), set(engine.images), device_id=DEV)
    assert again.empty
