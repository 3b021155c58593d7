"""Executor and loop logic on the in-memory engine: retries, journal, events, disk admission,
pruning, and health-gated rollback (crash loop, unhealthy, window expiry, no retry)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.errors import EngineError
from agent.reconcile.executor import Executor, ExecutorOptions, repository
from agent.reconcile.loop import LoopOptions, ReconcileLoop
from agent.reconcile.memrecorder import MemoryRecorder
from agent.reconcile.plan import Target, plan
from agent.runtime.base import ExecResult, ImageHealthcheck
from agent.runtime.memory import MemoryEngine
from bundles.model import BundleSpec, ContainerSpec, UpdatePolicy
from protocol.desired import DesiredState

DEV = "dev-x"
MB = 1_000_000


def spec(version: str, image: str, *, window: float = 30.0, name: str = "web") -> dict[str, Any]:
    return BundleSpec(
        "app",
        version,
        (ContainerSpec(name, image, network_mode="host"),),
        update=UpdatePolicy(health_window=window),
    ).to_dict()


def fast(**kw: Any) -> ExecutorOptions:
    return ExecutorOptions(**{"retries": 2, "backoff": 0.0, **kw})


async def _noop_sleep(_s: float) -> None:
    return None


async def run_plan(engine: MemoryEngine, target: Target, rec: MemoryRecorder, **kw: Any) -> Any:
    p = plan(target, await engine.list_containers(), set(engine.images), device_id=DEV)
    ex = Executor(engine, rec, DEV, fast(**kw), sleep=_noop_sleep)
    return await ex.run(p, target, rec.journal_begin(1, "test", p.to_dicts()))


def target(version: str, image: str) -> Target:
    from bundles import from_dict

    return Target.from_spec(from_dict(spec(version, image)))


async def test_transient_failures_are_retried_and_journalled() -> None:
    engine = MemoryEngine(DEV, registry={"reg/web:1": MB})
    fails = {"start": 2}

    def fault(op: str, ref: str) -> None:
        if fails.get(op, 0) > 0:
            fails[op] -= 1
            raise EngineError(f"transient {op}")

    engine.fault = fault
    rec = MemoryRecorder()
    result = await run_plan(engine, target("1.0.0", "reg/web:1"), rec)
    assert result.ok
    statuses = [(a, s) for _, a, s, _ in rec.runs[0]["steps"]]
    assert statuses == [
        ("pull", "started"), ("pull", "done"), ("create", "started"), ("create", "done"),
        ("start", "started"), ("start", "done"),
    ]  # fmt: skip
    assert rec.kinds() == ["pull.started", "pull.done", "container.started"]


async def test_a_step_that_keeps_failing_fails_the_run_and_skips_the_rest() -> None:
    engine = MemoryEngine(DEV, registry={"reg/web:1": MB})

    def fault(op: str, ref: str) -> None:
        if op == "create":
            raise EngineError("no space for the container")

    engine.fault = fault
    rec = MemoryRecorder()
    result = await run_plan(engine, target("1.0.0", "reg/web:1"), rec)
    assert not result.ok and "no space" in (result.reason or "")
    steps = rec.runs[0]["steps"]
    assert ("create", "failed") in [(a, s) for _, a, s, _ in steps]
    assert steps[-1][1:3] == ("start", "skipped")


async def test_pull_failure_emits_an_event_with_the_reason() -> None:
    engine = MemoryEngine(DEV, registry={})
    rec = MemoryRecorder()
    result = await run_plan(engine, target("1.0.0", "reg/web:1"), rec)
    assert not result.ok
    failed = [e for e in rec.events if e["kind"] == "pull.failed"]
    assert failed and "manifest unknown" in failed[0]["message"]


async def test_disk_admission_by_free_space() -> None:
    engine = MemoryEngine(DEV, registry={"reg/web:2": 50 * MB}, images={"reg/web:1": 50 * MB})
    engine.free_bytes = 60 * MB
    rec = MemoryRecorder()
    result = await run_plan(engine, target("2.0.0", "reg/web:2"), rec, min_free_bytes=20 * MB)
    assert not result.ok
    assert rec.kinds() == ["disk.refused"]
    assert "must stay free" in rec.events[0]["message"]
    assert "reg/web:2" not in engine.images


async def test_disk_admission_by_image_budget_before_and_after_pull() -> None:
    # A sibling tag is present: the estimate refuses before pulling anything.
    engine = MemoryEngine(DEV, registry={"reg/web:2": 5 * MB}, images={"reg/web:1": 5 * MB})
    rec = MemoryRecorder()
    result = await run_plan(engine, target("2.0.0", "reg/web:2"), rec, image_budget=MB)
    assert not result.ok and "image budget" in (result.reason or "")
    # No estimate possible: the pull runs, then the real size is over budget and it is removed.
    engine = MemoryEngine(DEV, registry={"reg/new:1": 5 * MB})
    rec = MemoryRecorder()
    result = await run_plan(engine, target("1.0.0", "reg/new:1"), rec, image_budget=MB)
    assert not result.ok and "image budget" in (result.reason or "")
    assert "reg/new:1" not in engine.images


async def test_prune_keeps_listed_and_in_use_images() -> None:
    engine = MemoryEngine(
        DEV, registry={}, images={"reg/web:1": 1, "reg/web:2": 1, "reg/web:3": 1, "other:1": 1}
    )
    ex = Executor(engine, MemoryRecorder(), DEV, fast())
    removed = await ex.prune(keep={"reg/web:3", "reg/web:2"}, candidates={"reg/web:1", "reg/web:2"})
    assert removed == ["reg/web:1"]
    assert set(engine.images) == {"reg/web:2", "reg/web:3", "other:1"}


def test_repository() -> None:
    assert repository("127.0.0.1:5000/a/b:1.0") == "127.0.0.1:5000/a/b"
    assert repository("a/b@sha256:" + "0" * 64) == "a/b"
    assert repository("127.0.0.1:5000/a") == "127.0.0.1:5000/a"


# -- loop -----------------------------------------------------------------------------------
class Desired:
    def __init__(self) -> None:
        self.value: DesiredState | None = None

    def __call__(self) -> DesiredState | None:
        return self.value


def make_loop(**opts: Any) -> tuple[ReconcileLoop, MemoryEngine, MemoryRecorder, Desired]:
    engine = MemoryEngine(
        DEV, registry={"reg/web:1": MB, "reg/web:2": MB, "reg/bad:1": MB, "reg/crash:1": MB}
    )
    rec = MemoryRecorder()
    desired = Desired()
    options = LoopOptions(**{"min_uptime": 0.0, "executor": fast(), **opts})
    return ReconcileLoop(engine, rec, desired, DEV, options), engine, rec, desired


async def settle(loop: ReconcileLoop, rounds: int = 6) -> None:
    """Run reconciles and health ticks until no gate is open (bounded)."""
    for _ in range(rounds):
        await loop.reconcile_once("test")
        await loop.health_tick()
        if not loop.gate_open and loop.last_result and loop.last_result.outcome != "waiting":
            break


def running(engine: MemoryEngine) -> list[str]:
    return sorted(c.image for c in engine.containers.values() if c.state == "running")


async def test_apply_then_update_then_empty() -> None:
    loop, engine, rec, desired = make_loop()
    desired.value = DesiredState(1, spec("1.0.0", "reg/web:1"))
    await settle(loop)
    assert running(engine) == ["reg/web:1"]
    assert rec.by_generation(1).status == "healthy"  # type: ignore[union-attr]
    desired.value = DesiredState(2, spec("2.0.0", "reg/web:2"))
    await settle(loop)
    assert running(engine) == ["reg/web:2"] and len(engine.containers) == 1
    desired.value = DesiredState(3, None)
    await settle(loop)
    assert engine.containers == {}
    assert rec.by_generation(3).status == "healthy"  # type: ignore[union-attr]


async def test_unhealthy_update_rolls_back_and_is_not_retried() -> None:
    loop, engine, rec, desired = make_loop()
    desired.value = DesiredState(1, spec("1.0.0", "reg/web:1"))
    await settle(loop)
    desired.value = DesiredState(2, spec("2.0.0", "reg/bad:1"))
    await loop.reconcile_once("desired")
    bad = next(c for c in engine.containers.values() if c.image == "reg/bad:1")
    bad.healthcheck = ImageHealthcheck(("/bin/false",), 0.0, 1.0, 1, 0.0)
    engine.exec_results[bad.name] = ExecResult(1, "")
    verdict = await loop.health_tick()
    assert verdict is not None and verdict.decision == "failed"
    await settle(loop)
    assert running(engine) == ["reg/web:1"]
    dep2 = rec.by_generation(2)
    assert dep2 is not None and dep2.status == "rolled_back" and "unhealthy" in (dep2.reason or "")
    assert "rollback" in rec.kinds() and "container.unhealthy" in rec.kinds()
    # The failed generation is not retried: more runs keep 1.0.
    before = len(rec.runs)
    for _ in range(3):
        await loop.reconcile_once("timer")
    assert running(engine) == ["reg/web:1"] and len(rec.runs) == before
    assert "reg/web:1" in engine.images  # the rollback target's image was kept
    # A new generation is applied again.
    desired.value = DesiredState(3, spec("2.0.0", "reg/web:2"))
    await settle(loop)
    assert running(engine) == ["reg/web:2"]


async def test_crash_loop_rolls_back() -> None:
    loop, engine, rec, desired = make_loop(crash_limit=3)
    desired.value = DesiredState(1, spec("1.0.0", "reg/web:1"))
    await settle(loop)
    desired.value = DesiredState(2, spec("2.0.0", "reg/crash:1"))
    await loop.reconcile_once("desired")
    for _ in range(3):
        c = next(c for c in engine.containers.values() if c.image == "reg/crash:1")
        engine.crash(c.id)
        await loop.reconcile_once("engine")  # restarts it (restart policy)
    verdict = await loop.health_tick()
    assert verdict is not None and verdict.decision == "failed" and "crash" in verdict.reason
    await settle(loop)
    assert running(engine) == ["reg/web:1"]
    assert rec.by_generation(2).status == "rolled_back"  # type: ignore[union-attr]


async def test_not_healthy_within_the_window_rolls_back() -> None:
    loop, _engine, rec, desired = make_loop(min_uptime=3600.0, health_window=0.0)
    desired.value = DesiredState(1, spec("1.0.0", "reg/web:1"))
    # window 0 with min_uptime 1h: the first deployment can never prove itself...
    await settle(loop)
    assert rec.by_generation(1).status == "failed"  # type: ignore[union-attr]
    assert "deployment.failed" in rec.kinds()
    # ...and with nothing to roll back to, the loop holds instead of retrying.
    result = await loop.reconcile_once("timer")
    assert result.outcome == "held" and "no earlier healthy" in (result.reason or "")


async def test_disk_refusal_fails_generation_and_keeps_old_version() -> None:
    loop, engine, rec, desired = make_loop(executor=fast(image_budget=MB + 1))
    desired.value = DesiredState(1, spec("1.0.0", "reg/web:1"))
    await settle(loop)
    desired.value = DesiredState(2, spec("2.0.0", "reg/web:2"))
    await settle(loop)
    assert "disk.refused" in rec.kinds()
    assert running(engine) == ["reg/web:1"]
    assert rec.by_generation(2).status == "rolled_back"  # type: ignore[union-attr]


async def test_invalid_desired_spec_fails_cleanly() -> None:
    loop, _engine, rec, desired = make_loop()
    desired.value = DesiredState(1, {"bundle": "x"})
    result = await loop.reconcile_once("desired")
    assert result.outcome == "held"
    dep = rec.by_generation(1)
    assert dep is not None and dep.status == "failed" and "invalid" in (dep.reason or "")


async def test_no_desired_state_is_a_noop() -> None:
    loop, engine, _rec, _desired = make_loop()
    engine.add_foreign("someone-else")
    result = await loop.reconcile_once("start")
    assert result.outcome == "noop" and len(engine.containers) == 1


@pytest.mark.parametrize("strategy", ["download-then-kill", "kill-then-download"])
async def test_strategies_reach_the_same_state(strategy: str) -> None:
    loop, engine, _rec, desired = make_loop()
    doc = spec("1.0.0", "reg/web:1")
    doc["update"]["strategy"] = strategy
    desired.value = DesiredState(1, doc)
    await settle(loop)
    doc2 = spec("2.0.0", "reg/web:2")
    doc2["update"]["strategy"] = strategy
    desired.value = DesiredState(2, doc2)
    await settle(loop)
    assert running(engine) == ["reg/web:2"]


async def test_rollback_is_watched_once_then_steady() -> None:
    loop, engine, rec, desired = make_loop()
    desired.value = DesiredState(1, spec("1.0.0", "reg/web:1"))
    await settle(loop)
    desired.value = DesiredState(2, spec("2.0.0", "reg/crash:1"))
    await loop.reconcile_once("desired")
    c = next(c for c in engine.containers.values() if c.image == "reg/crash:1")
    for _ in range(3):
        engine.crash(c.id)
    await loop.health_tick()
    await settle(loop)
    healthy_events = rec.kinds().count("deployment.healthy")
    for _ in range(3):
        await loop.reconcile_once("timer")
        await loop.health_tick()
    assert rec.kinds().count("deployment.healthy") == healthy_events
    assert not loop.gate_open and loop.idle


async def test_post_pull_budget_refusal_is_an_event_too() -> None:
    engine = MemoryEngine(DEV, registry={"reg/new:1": 5 * MB})
    rec = MemoryRecorder()
    result = await run_plan(engine, target("1.0.0", "reg/new:1"), rec, image_budget=MB)
    assert result.disk_full and "disk.refused" in rec.kinds()


async def test_engine_outage_does_not_fail_the_generation() -> None:
    from agent.errors import EngineUnavailable

    loop, engine, rec, desired = make_loop(max_apply_failures=1)
    desired.value = DesiredState(1, spec("1.0.0", "reg/web:1"))
    await settle(loop)
    desired.value = DesiredState(2, spec("2.0.0", "reg/web:2"))

    def down(op: str, ref: str) -> None:
        if op == "create":
            raise EngineUnavailable("engine gone", ["memory://"])

    engine.fault = down
    for _ in range(3):
        result = await loop.reconcile_once("retry")
        assert result.outcome == "failed"
    assert rec.by_generation(2).status == "applying"  # type: ignore[union-attr]
    engine.fault = None
    await settle(loop)
    assert rec.by_generation(2).status == "healthy"  # type: ignore[union-attr]
    assert running(engine) == ["reg/web:2"]


async def test_replayed_engine_events_are_not_crashes() -> None:
    loop, engine, rec, desired = make_loop()
    desired.value = DesiredState(1, spec("1.0.0", "reg/web:1"))
    await loop.reconcile_once("desired")
    c = next(iter(engine.containers.values()))
    attrs = dict(c.labels, exitCode="137")
    loop._on_exit("web", attrs, when=1.0)  # an exit from long before this agent started
    assert "container.exited" not in rec.kinds()
    import time as _time

    loop._on_exit("web", attrs, when=_time.time())
    assert "container.exited" in rec.kinds()


async def test_a_container_that_will_not_start_is_replaced() -> None:
    engine = MemoryEngine(DEV, registry={"reg/web:1": MB})
    rec = MemoryRecorder()
    tgt = target("1.0.0", "reg/web:1")
    first = [True]

    def fault(op: str, ref: str) -> None:
        if op == "start" and first[0]:
            first[0] = False
            raise EngineError("can't get final child's PID from pipe: EOF")

    engine.fault = fault
    result = await run_plan(engine, tgt, rec, retries=0)
    assert result.ok, result.reason
    assert running(engine) == ["reg/web:1"] and len(engine.containers) == 1


def test_consecutive_creates_and_starts_form_groups() -> None:
    from agent.reconcile.executor import _groups
    from agent.reconcile.plan import Create, Pull, Start, Step

    steps: list[Step] = [
        Pull("a", "r", "i"), Pull("b", "r", "i"), Create("a", "r", "i", "a-1", "h"),
        Create("b", "r", "i", "b-1", "h"), Start("a", "r", container_name="a-1"),
        Start("b", "r", container_name="b-1"),
    ]  # fmt: skip
    assert [[i for i, _ in g] for g in _groups(steps)] == [[0], [1], [2, 3], [4, 5]]


def test_every_step_type_has_one_executor_and_keeps_its_journal_form() -> None:
    from typing import get_args

    from agent.reconcile.executor import EXECUTORS
    from agent.reconcile.plan import Recreate, Start, Step, Stop

    assert set(EXECUTORS) == set(get_args(Step))
    # the journal's form is what it was when one dataclass held every action
    assert Recreate("web", "why", "img", "c1", "sb-web", "h").to_dict() == {
        "action": "recreate", "service": "web", "reason": "why", "image": "img",
        "container_id": "c1", "container_name": "sb-web", "spec_hash": "h",
    }  # fmt: skip
    assert Stop("web", "why", "c1").to_dict() == {
        "action": "stop",
        "service": "web",
        "reason": "why",
        "container_id": "c1",
    }
    with pytest.raises(ValueError):
        Start("web", "why")  # neither the container's id nor its name


async def test_a_generation_superseded_inside_its_window_is_closed() -> None:
    loop, _engine, rec, desired = make_loop(min_uptime=3600.0)
    desired.value = DesiredState(1, spec("1.0.0", "reg/web:1"))
    await loop.reconcile_once("desired")
    assert loop.gate_open
    desired.value = DesiredState(2, spec("2.0.0", "reg/web:2"))
    await loop.reconcile_once("desired")
    dep1 = rec.by_generation(1)
    assert dep1 is not None and dep1.status == "failed" and "superseded" in (dep1.reason or "")
    assert rec.by_generation(2).status == "applying"  # type: ignore[union-attr]


async def test_a_cleared_override_gives_back_the_hub_revision_it_interrupted() -> None:
    """A field override lands inside a hub revision's health window (a rollout's device),
    then is cleared: the hub revision runs and is judged, never "rolled back" from to the
    cleared override (the override was running healthy, the last healthy deployment)."""
    import dataclasses

    loop, engine, rec, desired = make_loop()
    desired.value = DesiredState(1, spec("1.0.0", "reg/web:1"))
    await settle(loop)
    loop.options = dataclasses.replace(loop.options, min_uptime=3600.0)
    hub = DesiredState(2, spec("2.0.0", "reg/web:2"), rollout_id="ro-1")
    desired.value = hub
    await loop.reconcile_once("desired")
    assert loop.gate_open
    loop.options = dataclasses.replace(loop.options, min_uptime=0.0)
    desired.value = DesiredState(3, spec("1.5.0", "reg/web:1"), source="local")
    await settle(loop)
    assert rec.by_generation(3).status == "healthy"  # type: ignore[union-attr]
    assert rec.by_generation(2).status == "applying"  # type: ignore[union-attr]
    desired.value = hub  # `signalbeam-agent apply --clear`
    await settle(loop)
    assert running(engine) == ["reg/web:2"]
    assert rec.by_generation(2).status == "healthy"  # type: ignore[union-attr]


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="retries"):
        ExecutorOptions(retries=-1)
    with pytest.raises(ValueError, match="timeouts"):
        ExecutorOptions(timeouts={"pull": 0})
    with pytest.raises(ValueError, match="interval, crash_limit"):
        LoopOptions(interval=0, crash_limit=0)
    with pytest.raises(ValueError, match="device_id"):
        ReconcileLoop(MemoryEngine("d"), MemoryRecorder(), Desired(), "")


async def test_a_revision_given_up_by_a_later_run_is_not_revived_by_its_window() -> None:
    """A later run of a revision being watched (here: a duplicate it cannot remove) gives
    the revision up; the window's verdict must not then write the rolled-back row healthy
    (found by the lifecycle's property test: rolled_back -> healthy)."""
    from agent.reconcile.requests import create_request
    from bundles import from_dict

    loop, engine, rec, desired = make_loop(max_apply_failures=1)
    desired.value = DesiredState(1, spec("1.0.0", "reg/web:1"))
    await settle(loop)
    desired.value = DesiredState(2, spec("2.0.0", "reg/web:2"))
    await loop.reconcile_once("desired")
    assert loop.gate_open and running(engine) == ["reg/web:2"]
    svc = Target.from_spec(from_dict(spec("2.0.0", "reg/web:2"))).services[0]
    await engine.create(create_request(svc.spec, device_id=DEV, bundle="app", version="2.0.0",
                                       spec_hash=svc.spec_hash, name="sb-web-duplicate"))  # fmt: skip

    def fault(op: str, ref: str) -> None:
        if op == "remove":
            raise EngineError("device or resource busy")

    engine.fault = fault
    result = await loop.reconcile_once("timer")
    assert result.outcome == "failed"
    assert rec.by_generation(2).status == "rolled_back"  # type: ignore[union-attr]
    await loop.health_tick()  # 2.0 runs and would pass its window now
    assert rec.by_generation(2).status == "rolled_back"  # type: ignore[union-attr]
    assert rec.kinds().count("rollback") == 1 and "deployment.healthy" not in rec.kinds()[-3:]
