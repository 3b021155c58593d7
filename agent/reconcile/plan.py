"""The reconcile planner: a pure function from (target, observed containers, images) to steps.

No I/O and no clock: the same inputs always give the same plan, which is what makes the
planner easy to test and the executor safe to kill. A step cut off mid-way leaves the engine
in some state the next observation sees, and planning again from there converges.

Only containers labelled with this device appear in ``observed``; the planner checks the
label again so a foreign container can never end up in a step.

Start order (``depends_on``): a service is created, recreated or started only once each of
its dependencies is satisfied *in the observed state*: the dependency's current container
(this target's spec hash) is running, and for ``service_healthy`` the agent's own health
evaluation (``health``) calls it healthy. Otherwise the service is left as it is and the
plan says what it waits for (``Plan.waiting``); the loop plans again when the observed state
or a health status changes. Waiting is thus spread over loop runs, never a sleep in a step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from agent.runtime.base import ObservedContainer
from bundles.hashing import container_hash
from bundles.model import BundleSpec, ContainerSpec, Dependency, UpdateStrategy

Action = Literal["pull", "create", "start", "stop", "remove", "recreate"]
# The agent's health verdict on one container, by container id; "none": it has no probe at
# all (neither the bundle's nor the image's), so ``service_healthy`` waits only for it to run.
Readiness = Literal["starting", "healthy", "unhealthy", "none"]

# Best container first when several carry the right spec hash (e.g. after a crash mid-update).
_STATE_RANK = {"running": 0, "restarting": 1, "paused": 2, "created": 3, "exited": 4}


@dataclass(frozen=True)
class DesiredService:
    service: str
    spec: ContainerSpec
    spec_hash: str


@dataclass(frozen=True)
class Target:
    """What the device should run: one bundle version's containers, or nothing."""

    bundle: str | None
    version: str | None
    services: tuple[DesiredService, ...] = ()
    strategy: UpdateStrategy = "download-then-kill"

    @classmethod
    def from_spec(cls, spec: BundleSpec | None) -> Target:
        if spec is None:
            return cls(None, None)
        return cls(
            spec.bundle,
            spec.version,
            tuple(DesiredService(c.name, c, container_hash(c)) for c in spec.containers),
            spec.update.strategy,
        )

    @property
    def images(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.spec.image for s in self.services))


# -- steps: one type per action, each with exactly the arguments it needs; the executor has
# one function per type (``agent.reconcile.executor.EXECUTORS``).
_FIELDS = ("image", "container_id", "container_name", "spec_hash")  # journal order


@dataclass(frozen=True)
class _Step:
    action: ClassVar[Action]
    service: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The journal's form (the same keys whatever the type; absent ones left out)."""
        out: dict[str, Any] = {"action": self.action, "service": self.service}
        out["reason"] = self.reason
        for name in _FIELDS:
            value = getattr(self, name, None)
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True)
class Pull(_Step):
    action: ClassVar[Action] = "pull"
    image: str


@dataclass(frozen=True)
class Create(_Step):
    action: ClassVar[Action] = "create"
    image: str
    container_name: str  # deterministic (``container_name``), so a cut-off create is found
    spec_hash: str


@dataclass(frozen=True)
class Start(_Step):
    """Start an existing container (by id) or one this plan creates (by its name)."""

    action: ClassVar[Action] = "start"
    container_id: str | None = None
    container_name: str | None = None

    def __post_init__(self) -> None:
        if (self.container_id is None) == (self.container_name is None):
            raise ValueError("Start: give exactly one of container_id and container_name")

    @property
    def ref(self) -> str:
        return self.container_id or self.container_name or ""


@dataclass(frozen=True)
class Stop(_Step):
    action: ClassVar[Action] = "stop"
    container_id: str


@dataclass(frozen=True)
class Remove(_Step):
    action: ClassVar[Action] = "remove"
    container_id: str


@dataclass(frozen=True)
class Recreate(_Step):
    """Replace ``container_id`` with a new ``container_name`` (download-then-kill)."""

    action: ClassVar[Action] = "recreate"
    image: str
    container_id: str
    container_name: str
    spec_hash: str


Step = Pull | Create | Start | Stop | Remove | Recreate


@dataclass(frozen=True)
class Noop:
    service: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "reason": self.reason}


@dataclass(frozen=True)
class Wait:
    """A service held back until a dependency is satisfied."""

    service: str
    dependency: str
    condition: str
    reason: str  # e.g. "waiting for db to be healthy (starting)"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...] = ()
    noops: tuple[Noop, ...] = field(default_factory=tuple)
    waiting: tuple[Wait, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.steps

    def to_dicts(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.steps]


def container_name(device_id: str, service: str, spec_hash: str) -> str:
    """Deterministic, so a create cut off mid-way is found again, and unique per device."""
    dev = hashlib.sha256(device_id.encode()).hexdigest()[:6]
    return f"sb-{service}-{spec_hash[:10]}-{dev}"


def image_present(image: str, images: Collection[str]) -> bool:
    """Engines store short names expanded (Podman: docker.io/library/x:latest)."""
    last = image.rsplit("/", 1)[-1]
    tagged = image if (":" in last or "@" in image) else f"{image}:latest"
    candidates = {image, tagged, f"docker.io/{tagged}", f"localhost/{tagged}"}
    if "/" not in image:
        candidates.add(f"docker.io/library/{tagged}")
    return any(c in images for c in candidates)


def _should_start(c: ObservedContainer, spec: ContainerSpec) -> tuple[bool, str]:
    if c.state == "created":
        return True, "created but not started"
    if c.state == "exited":
        code = c.exit_code
        if spec.restart in ("always", "unless-stopped"):
            return True, f"exited (code {code}); restart policy {spec.restart}"
        if spec.restart == "on-failure" and code not in (0, None):
            return True, f"exited with code {code}; restart policy on-failure"
        return False, f"exited (code {code}); restart policy {spec.restart}: left stopped"
    if c.state == "running":
        return False, f"running, spec unchanged ({c.spec_hash})"
    return False, f"{c.state}: left to the engine"


def _best(containers: Iterable[ObservedContainer]) -> list[ObservedContainer]:
    return sorted(
        containers,
        key=lambda c: (_STATE_RANK.get(c.state, 9), -(c.created_at or 0.0), c.id),
    )


def _takedown(c: ObservedContainer, why: str) -> list[Step]:
    steps: list[Step] = []
    if c.state in ("running", "restarting", "paused"):
        steps.append(Stop(c.service, why, container_id=c.id))
    steps.append(Remove(c.service, why, container_id=c.id))
    return steps


def current_container(
    want: DesiredService, containers: Iterable[ObservedContainer], bundle: str | None
) -> ObservedContainer | None:
    """The container that runs ``want`` now (its spec hash, this bundle), best first."""
    same = [
        c
        for c in containers
        if c.spec_hash == want.spec_hash and c.bundle == bundle and c.state != "dead"
    ]
    best = _best(same)
    return best[0] if best else None


def unmet(
    dep: Dependency, current: ObservedContainer | None, health: Mapping[str, Readiness]
) -> str | None:
    """Why ``dep`` is not satisfied by its service's ``current`` container; None: it is."""
    if current is None:
        return f"waiting for {dep.service} to be created"
    if current.state != "running":
        return f"waiting for {dep.service} to start ({current.state})"
    if dep.condition == "service_healthy":
        status = health.get(current.id)
        if status is None:
            return f"waiting for {dep.service} to be healthy (not probed yet)"
        if status not in ("healthy", "none"):
            return f"waiting for {dep.service} to be healthy ({status})"
    return None


def plan(
    target: Target,
    observed: Sequence[ObservedContainer],
    images: Collection[str],
    *,
    device_id: str,
    health: Mapping[str, Readiness] | None = None,
) -> Plan:
    """Steps that take ``observed`` to ``target``; empty when they already agree.

    ``health`` is the agent's verdict per container id, for ``service_healthy`` dependencies;
    a container missing from it has not been judged yet and does not count as healthy.
    """
    ours = [c for c in observed if c.device == device_id]
    wanted = {s.service: s for s in target.services}
    by_service: dict[str, list[ObservedContainer]] = {}
    for c in ours:
        by_service.setdefault(c.service, []).append(c)
    verdicts: Mapping[str, Readiness] = health or {}
    current = {
        service: current_container(want, by_service.get(service, []), target.bundle)
        for service, want in wanted.items()
    }
    waiting: list[Wait] = []

    def held(service: str, spec: ContainerSpec) -> bool:
        """Record and say whether ``service`` must wait for one of its dependencies."""
        found = False
        for dep in spec.depends_on:
            why = unmet(dep, current.get(dep.service), verdicts)
            if why is not None:
                waiting.append(Wait(service, dep.service, dep.condition, why))
                found = True
        return found

    noops: list[Noop] = []
    pulls: list[Step] = []
    doomed: list[Step] = []  # stop/remove of containers nothing replaces
    recreates: list[Step] = []
    replaced: list[Step] = []  # kill-then-download: old containers of changed services
    creates: list[Step] = []
    starts: list[Step] = []

    for service, containers in sorted(by_service.items()):
        if service not in wanted:
            why = (
                f"service {service!r} is not in {target.bundle}@{target.version}"
                if target.bundle
                else "no bundle is desired"
            )
            for c in _best(containers):
                doomed += _takedown(c, why)

    pulled: set[str] = set()
    for service, want in sorted(wanted.items()):
        containers = by_service.get(service, [])
        same = [
            c for c in containers if c.spec_hash == want.spec_hash and c.bundle == target.bundle
        ]
        for c in same:
            if c.state == "dead":
                doomed += _takedown(c, "the engine reports it dead")
        matching = _best(c for c in same if c.state != "dead")
        stale = _best(c for c in containers if c not in same)
        image = want.spec.image
        name = container_name(device_id, service, want.spec_hash)
        needs_image = not matching
        if needs_image and not image_present(image, images) and image not in pulled:
            pulls.append(Pull(service, f"image {image} is not present", image=image))
            pulled.add(image)
        if matching:
            keep, extra = matching[0], matching[1:]
            for c in extra:
                doomed += _takedown(c, f"duplicate of {keep.name} for service {service!r}")
            for c in stale:
                doomed += _takedown(c, f"stale: spec hash {c.spec_hash} != {want.spec_hash}")
            start, why = _should_start(keep, want.spec)
            if start and held(service, want.spec):
                noops.append(Noop(service, f"{why}; not started: {waiting[-1].reason}"))
            elif start:
                starts.append(Start(service, why, container_id=keep.id))
            else:
                noops.append(Noop(service, why))
            continue
        if held(service, want.spec):
            noops.append(Noop(service, f"not created yet: {waiting[-1].reason}"))
            # The old container (if any) keeps running until the dependencies are ready, so
            # an update never takes a service down only to leave it waiting; under
            # kill-then-download it is taken down now, as that strategy promises.
            if target.strategy == "kill-then-download":
                for c in stale:
                    replaced += _takedown(c, f"spec hash changed {c.spec_hash} -> {want.spec_hash}")
            continue
        if stale and target.strategy == "download-then-kill":
            old, rest = stale[0], stale[1:]
            for c in rest:
                doomed += _takedown(c, f"stale: spec hash {c.spec_hash} != {want.spec_hash}")
            recreates.append(
                Recreate(
                    service,
                    f"spec hash changed {old.spec_hash} -> {want.spec_hash}",
                    image=image,
                    container_id=old.id,
                    container_name=name,
                    spec_hash=want.spec_hash,
                )
            )
            continue
        for c in stale:
            replaced += _takedown(c, f"spec hash changed {c.spec_hash} -> {want.spec_hash}")
        creates.append(
            Create(
                service,
                "no container yet" if not stale else "replacing the stale container",
                image=image,
                container_name=name,
                spec_hash=want.spec_hash,
            )
        )
        starts.append(Start(service, "newly created", container_name=name))

    if not wanted and not ours:
        noops.append(Noop("*", "no bundle desired and none of this device's containers exist"))
    if target.strategy == "kill-then-download":
        steps = doomed + replaced + pulls + recreates + creates + starts
    else:
        steps = pulls + doomed + replaced + recreates + creates + starts
    return Plan(tuple(steps), tuple(noops), tuple(waiting))
