"""Planner: table-driven ("observed in, steps out, empty plan on the second run")."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from agent.reconcile.executor import Executor, ExecutorOptions
from agent.reconcile.memrecorder import MemoryRecorder
from agent.reconcile.plan import Target, container_name, image_present, plan
from agent.runtime.base import ObservedContainer
from agent.runtime.memory import MemoryEngine
from bundles.hashing import container_hash
from bundles.model import BundleSpec, ContainerSpec, UpdatePolicy

DEV = "dev-1"


def bundle(
    version: str, *containers: ContainerSpec, strategy: str = "download-then-kill"
) -> Target:
    return Target.from_spec(
        BundleSpec("app", version, tuple(containers), update=UpdatePolicy(strategy=strategy))  # type: ignore[arg-type]
    )


WEB1 = ContainerSpec("web", "reg/web:1")
WEB2 = ContainerSpec("web", "reg/web:2")
DB1 = ContainerSpec("db", "reg/db:1", restart="no")


def obs(spec: ContainerSpec, state: str = "running", *, cid: str | None = None,
        device: str = DEV, bundle_name: str = "app", exit_code: int | None = None,
        created: float = 1.0, spec_hash: str | None = None) -> ObservedContainer:  # fmt: skip
    h = spec_hash or container_hash(spec)
    return ObservedContainer(
        id=cid or f"id-{spec.name}-{h[:4]}-{state}",
        name=container_name(device, spec.name, h),
        service=spec.name,
        bundle=bundle_name,
        version="x",
        spec_hash=h,
        device=device,
        state=state,  # type: ignore[arg-type]
        exit_code=exit_code,
        image=spec.image,
        created_at=created,
    )


def actions(p: object) -> list[tuple[str, str]]:
    return [(s.action, s.service) for s in p.steps]  # type: ignore[attr-defined]


CASES = [
    ("fresh install pulls, creates, starts",
     bundle("1", WEB1), [], set(),
     [("pull", "web"), ("create", "web"), ("start", "web")]),
    ("image present: no pull",
     bundle("1", WEB1), [], {"reg/web:1"},
     [("create", "web"), ("start", "web")]),
    ("already running: nothing",
     bundle("1", WEB1), [obs(WEB1)], {"reg/web:1"}, []),
    ("created but not started: start",
     bundle("1", WEB1), [obs(WEB1, "created")], {"reg/web:1"}, [("start", "web")]),
    ("exited, restart unless-stopped: start",
     bundle("1", WEB1), [obs(WEB1, "exited", exit_code=1)], {"reg/web:1"}, [("start", "web")]),
    ("exited 0, restart no: left stopped",
     bundle("1", DB1), [obs(DB1, "exited", exit_code=0)], {"reg/db:1"}, []),
    ("spec changed, download-then-kill: pull then recreate",
     bundle("2", WEB2), [obs(WEB1)], {"reg/web:1"},
     [("pull", "web"), ("recreate", "web")]),
    ("spec changed, kill-then-download: stop, remove, pull, create, start",
     bundle("2", WEB2, strategy="kill-then-download"), [obs(WEB1)], {"reg/web:1"},
     [("stop", "web"), ("remove", "web"), ("pull", "web"), ("create", "web"), ("start", "web")]),
    ("service dropped: stop and remove",
     bundle("2", WEB1), [obs(WEB1), obs(DB1)], {"reg/web:1", "reg/db:1"},
     [("stop", "db"), ("remove", "db")]),
    ("empty bundle removes everything of ours",
     Target(None, None), [obs(WEB1), obs(DB1, "exited", exit_code=0)], set(),
     [("remove", "db"), ("stop", "web"), ("remove", "web")]),
    ("duplicate after a crash mid-update: keep the running one",
     bundle("1", WEB1), [obs(WEB1, cid="a"), obs(WEB1, "created", cid="b")], {"reg/web:1"},
     [("remove", "web")]),
    ("new created beside old running (crash mid-recreate): take old down, start new",
     bundle("2", WEB2), [obs(WEB1), obs(WEB2, "created")], {"reg/web:1", "reg/web:2"},
     [("stop", "web"), ("remove", "web"), ("start", "web")]),
    ("foreign containers never appear",
     Target(None, None), [obs(WEB1, device="other-device")], set(), []),
    ("dead container is replaced",
     bundle("1", WEB1), [obs(WEB1, "dead")], {"reg/web:1"},
     [("remove", "web"), ("create", "web"), ("start", "web")]),
    ("two services share one image: one pull",
     bundle("1", WEB1, replace(WEB1, name="web2")), [], set(),
     [("pull", "web"), ("create", "web"), ("create", "web2"), ("start", "web"), ("start", "web2")]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("target", "observed", "images", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_plan_table(
    target: Target,
    observed: list[ObservedContainer],
    images: set[str],
    expected: list[tuple[str, str]],
) -> None:
    p = plan(target, observed, images, device_id=DEV)
    assert actions(p) == expected
    assert all(s.reason for s in p.steps)
    if not expected:
        assert p.noops and all(n.reason for n in p.noops)
    # Applying the plan to a simulated engine, then planning again, gives the empty plan.
    engine, rec = _engine_from(observed, images, target)
    result = asyncio.run(
        Executor(engine, rec, DEV, _fast()).run(p, target, rec.journal_begin(1, "t", []))
    )
    assert result.ok, result.reason
    again = plan(target, asyncio.run(engine.list_containers()), set(engine.images), device_id=DEV)
    assert again.empty, again.steps


def test_plan_is_pure_and_deterministic() -> None:
    target = bundle("2", WEB2, DB1)
    observed = [obs(WEB1), obs(DB1, "exited", exit_code=3)]
    assert plan(target, observed, set(), device_id=DEV) == plan(
        target, list(observed), set(), device_id=DEV
    )


def test_noop_reasons_name_each_service() -> None:
    p = plan(bundle("1", WEB1, DB1), [obs(WEB1), obs(DB1, "exited", exit_code=0)],
             {"reg/web:1", "reg/db:1"}, device_id=DEV)  # fmt: skip
    assert p.empty
    assert {n.service for n in p.noops} == {"web", "db"}
    assert any("left stopped" in n.reason for n in p.noops)


def test_download_then_kill_pulls_before_any_stop() -> None:
    target = bundle("2", WEB2, replace(DB1, image="reg/db:2"))
    p = plan(target, [obs(WEB1), obs(DB1)], {"reg/web:1", "reg/db:1"}, device_id=DEV)
    kinds = [s.action for s in p.steps]
    last_pull = max(i for i, k in enumerate(kinds) if k == "pull")
    first_kill = min(i for i, k in enumerate(kinds) if k in ("stop", "remove", "recreate"))
    assert last_pull < first_kill


def test_image_present_expands_short_names() -> None:
    assert image_present("busybox", {"docker.io/library/busybox:latest"})
    assert image_present("sbtest/x:1", {"localhost/sbtest/x:1"})
    assert not image_present("reg/web:2", {"reg/web:1"})


def _fast() -> ExecutorOptions:
    return ExecutorOptions(retries=0, backoff=0.0)


def _engine_from(
    observed: list[ObservedContainer], images: set[str], target: Target
) -> tuple[MemoryEngine, MemoryRecorder]:
    from agent.runtime.memory import MemContainer

    registry = {s.spec.image: 10 for s in target.services}
    engine = MemoryEngine(DEV, images={i: 10 for i in images}, registry=registry)
    for o in observed:
        labels = {
            "io.signalbeam.device": o.device,
            "io.signalbeam.bundle": o.bundle,
            "io.signalbeam.service": o.service,
            "io.signalbeam.spec-hash": o.spec_hash,
        }
        engine.containers[o.id] = MemContainer(
            o.id, o.name if o.device == DEV else f"foreign-{o.id}", o.image, labels,
            state=o.state, exit_code=o.exit_code, created_at=o.created_at or 0.0,
            restart="no" if o.service == "db" else "unless-stopped",
        )  # fmt: skip
        engine.images.setdefault(o.image, 10)
    return engine, MemoryRecorder()
