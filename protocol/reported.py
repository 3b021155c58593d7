"""The reported-state contract: the kinds of outbox row a device sends, what each one's payload
holds, and the one tolerant reader of the reported-state document the hub keeps from them.

Upstream, the agent writes each state change with an outbox row in the same transaction
(``agent.store``); the rows travel in report batches (``protocol.report``); the hub applies
them (``hub.sync.apply``, each kind in ``hub.sync.rows``): ``event`` and ``metrics.1m`` rows
go to their tables, and the latest row of each ``REPORTED_PARTS`` kind becomes one part of
the device's reported-state document (``reported_state.doc``), stamped with ``as_of`` (when
the part was true, ISO UTC), plus ``running``: the last healthy deployment. That document is
what the hub's summary, its rollouts and the TUI read, always through ``ReportedState.read``.

The document is whatever the device last sent, from any agent version, so the reader never
raises: a missing part, a missing key or a key of the wrong type reads as absent (None), and
unknown keys are ignored. It also reads the flat shapes an older or foreign writer used
(top-level ``bundle_ref``/``bundle``+``version``/``generation``/``containers``,
``last_reconcile``, ``last_result``). The wire format is JSON objects; these types only name
what is in them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, NotRequired, TypedDict


class RowKind(StrEnum):
    """The kind of an outbox row (``ReportRow.kind`` on the wire). A receiver meets kinds it
    does not know (a newer agent): ``RowKind.of`` reads those as None, and the hub only
    advances the device's sequence past them."""

    EVENT = "event"  # EventPayload: one event-log entry
    METRICS_1M = "metrics.1m"  # MetricsPayload: one minute's rollups
    OBSERVED = "observed"  # ObservedPayload: the container snapshot, when it changed
    DESIRED = "desired"  # DesiredPayload: a desired revision the agent stored
    DEPLOYMENT = "deployment"  # DeploymentPayload: a deployment began or changed status
    RECONCILE = "reconcile"  # ReconcilePayload: a reconcile run that did something
    GATE = "gate"  # GatePayload: a new revision deferred (update lock, window), or no longer
    OVERSIZED = "oversized"  # OversizedPayload: stands in for a row too large to send

    @classmethod
    def of(cls, kind: Any) -> RowKind | None:
        try:
            return cls(kind)
        except ValueError:
            return None


REPORTED_PARTS: tuple[RowKind, ...] = (
    RowKind.OBSERVED,
    RowKind.DESIRED,
    RowKind.DEPLOYMENT,
    RowKind.RECONCILE,
    RowKind.GATE,
)
"""The row kinds whose latest payload is a part of the reported-state document."""

DeploymentStatus = Literal["applying", "healthy", "failed", "rolled_back"]
DEPLOYMENT_STATUSES: tuple[DeploymentStatus, ...] = ("applying", "healthy", "failed", "rolled_back")
FINAL_STATUSES = frozenset({"healthy", "failed", "rolled_back"})
FAILED_STATUSES = ("failed", "rolled_back")
# Engine states of a container that is not doing its job (with ``health: unhealthy``).
BAD_CONTAINER_STATES = ("exited", "dead", "restarting")


def container_bad(container: Mapping[str, Any]) -> bool:
    """A reported container that is exited, dead, restarting or unhealthy."""
    return container.get("state") in BAD_CONTAINER_STATES or container.get("health") == "unhealthy"


class EventPayload(TypedDict):
    seq: int  # the device's own event sequence
    kind: str
    severity: str  # debug, info, warning, error
    message: str
    data: dict[str, Any] | None
    ts: float
    mono: float


class MetricsPayload(TypedDict):
    bucket: int  # the minute's start, epoch seconds
    metrics: dict[str, list[float]]  # name -> [min, avg, max, count]
    # Seconds the row covers from ``bucket`` when more than the minute: a metered device
    # gives up this detail first (agent.sync.pacing); the hub stores it at ``bucket``.
    span: NotRequired[int]


class ObservedPayload(TypedDict):
    containers: list[dict[str, Any]]  # name, service, state, health, image... sorted by name
    ts: float


class DesiredPayload(TypedDict):
    generation: int
    source: str  # hub, local
    content_hash: str | None
    rollout_id: str | None
    bundle_ref: str | None  # "name@version"; None: run no bundle
    spec: NotRequired[dict[str, Any] | None]  # a local override's spec (the hub never saw it)
    actor: NotRequired[str | None]


class DeploymentPayload(TypedDict):
    generation: int
    source: str  # hub, local (absent from agents before revision identities: hub)
    spec_hash: str | None
    bundle_ref: str | None
    status: str  # a DeploymentStatus
    reason: str | None
    started_at: float | None
    finished_at: float | None


class ReconcilePayload(TypedDict):
    run_id: int
    generation: int | None
    trigger: str
    result: str
    reason: str | None
    started_at: float
    finished_at: float
    steps: int


class GatePayload(TypedDict):
    state: str  # deferred, clear
    generation: int
    bundle_ref: str | None
    kind: NotRequired[str]  # what defers it (deferred only): lock, window...
    reason: NotRequired[str]
    until: NotRequired[str | None]  # the device's local ISO time it may start, if known
    locks: NotRequired[list[dict[str, Any]]]  # {who, since, source} of each lock held
    ts: float


class OversizedPayload(TypedDict):
    kind: str  # the kind of the row it replaces
    size: int  # that row's payload bytes


RowPayload = (
    EventPayload
    | MetricsPayload
    | ObservedPayload
    | DesiredPayload
    | DeploymentPayload
    | ReconcilePayload
    | GatePayload
    | OversizedPayload
)


# ---------------------------------------------------------------- the tolerant reader


def _map(doc: Any, key: str) -> Mapping[str, Any] | None:
    value = doc.get(key) if isinstance(doc, Mapping) else None
    return value if isinstance(value, Mapping) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _num(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


@dataclass(frozen=True)
class DeploymentPart:
    """A deployment as reported: the document's ``deployment`` part, or one row's payload."""

    generation: int | None = None
    bundle_ref: str | None = None
    status: str | None = None
    reason: str | None = None
    source: str | None = None  # None: an agent before revision identities (the hub's)
    as_of: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def read(cls, part: Any) -> DeploymentPart | None:
        if not isinstance(part, Mapping):
            return None
        return cls(
            _int(part.get("generation")),
            _text(part.get("bundle_ref")),
            _text(part.get("status")),
            _text(part.get("reason")),
            _text(part.get("source")),
            _text(part.get("as_of")),
            _num(part.get("started_at")),
            _num(part.get("finished_at")),
        )

    @property
    def hub_revision(self) -> bool:
        """A row of the hub's own revisions (not a local override): rollouts count these."""
        return self.source in (None, "hub")

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES


@dataclass(frozen=True)
class DesiredPart:
    generation: int | None = None
    bundle_ref: str | None = None
    rollout_id: str | None = None
    source: str | None = None

    @classmethod
    def read(cls, part: Any) -> DesiredPart | None:
        if not isinstance(part, Mapping):
            return None
        return cls(
            _int(part.get("generation")),
            _text(part.get("bundle_ref")),
            _text(part.get("rollout_id")),
            _text(part.get("source")),
        )


@dataclass(frozen=True)
class RunningPart:
    """The hub's record of the device's last healthy deployment."""

    bundle_ref: str | None = None
    generation: int | None = None
    as_of: str | None = None


@dataclass(frozen=True)
class ReconcilePart:
    """The last reconcile run that changed something or failed."""

    result: str | None = None  # ok, failed... (None: still running)
    reason: str | None = None
    trigger: str | None = None
    generation: int | None = None
    steps: int | None = None
    finished_at: float | None = None

    @classmethod
    def read(cls, part: Any) -> ReconcilePart | None:
        if not isinstance(part, Mapping):
            return None
        return cls(
            _text(part.get("result")),
            _text(part.get("reason")),
            _text(part.get("trigger")),
            _int(part.get("generation")),
            _int(part.get("steps")),
            _num(part.get("finished_at")),
        )


@dataclass(frozen=True)
class GatePart:
    """The device's update gate: whether a new revision waits (``state`` deferred) and why."""

    state: str | None = None
    reason: str | None = None
    kind: str | None = None
    until: str | None = None
    generation: int | None = None
    bundle_ref: str | None = None
    as_of: str | None = None
    locks: tuple[Mapping[str, Any], ...] | None = None  # None: the part lists none

    @classmethod
    def read(cls, part: Any) -> GatePart | None:
        if not isinstance(part, Mapping):
            return None
        locks = part.get("locks")
        return cls(
            _text(part.get("state")),
            _text(part.get("reason")),
            _text(part.get("kind")),
            _text(part.get("until")),
            _int(part.get("generation")),
            _text(part.get("bundle_ref")),
            _text(part.get("as_of")),
            tuple(lk for lk in locks if isinstance(lk, Mapping))
            if isinstance(locks, list)
            else None,
        )

    @property
    def deferred(self) -> bool:
        return self.state == "deferred"


@dataclass(frozen=True)
class ReportedState:
    """One device's reported-state document, read. ``containers`` is None when the device
    never reported any (not the same as an empty snapshot); each is the agent's own mapping
    (``name``, ``service``, ``state``, ``health``, ``image``...), objects only."""

    deployment: DeploymentPart | None = None
    desired: DesiredPart | None = None
    running: RunningPart | None = None
    containers: tuple[Mapping[str, Any], ...] | None = None
    observed_as_of: str | None = None
    reconcile: ReconcilePart | None = None
    gate: GatePart | None = None
    # The flat shapes of an older or foreign writer.
    bundle_ref: str | None = None
    bundle: str | None = None
    version: str | None = None
    generation: int | None = None
    last_result: str | None = None

    @classmethod
    def read(cls, doc: Any) -> ReportedState:
        """Never raises: whatever ``doc`` is, the parts it holds in the expected shape."""
        if not isinstance(doc, Mapping):
            return cls()
        observed = _map(doc, "observed")
        items = observed.get("containers") if observed is not None else None
        if items is None:
            items = doc.get("containers")
        running = _map(doc, "running")
        run = _map(doc, "last_reconcile") or _map(doc, "reconcile")
        return cls(
            deployment=DeploymentPart.read(doc.get("deployment")),
            desired=DesiredPart.read(doc.get("desired")),
            running=None
            if running is None
            else RunningPart(
                _text(running.get("bundle_ref")),
                _int(running.get("generation")),
                _text(running.get("as_of")),
            ),
            containers=tuple(c for c in items if isinstance(c, Mapping))
            if isinstance(items, list)
            else None,
            observed_as_of=_text(observed.get("as_of")) if observed is not None else None,
            reconcile=ReconcilePart.read(run),
            gate=GatePart.read(doc.get("gate")),
            bundle_ref=_text(doc.get("bundle_ref")),
            bundle=_text(doc.get("bundle")),
            version=_text(doc.get("version")),
            generation=_int(doc.get("generation")),
            last_result=_text(doc.get("last_result")),
        )

    def newest_generation(self) -> int | None:
        """The highest generation the document mentions (desired, deployment, top level)."""
        found = [
            g
            for g in (
                self.desired.generation if self.desired else None,
                self.deployment.generation if self.deployment else None,
                self.generation,
            )
            if g is not None
        ]
        return max(found) if found else None

    def stated_ref(self) -> str | None:
        """``bundle@version`` the document says runs: a top-level ``bundle_ref``, then the
        deployment when healthy or applying, then the hub's ``running`` part (the last healthy
        deployment: after a failed update it still names what runs)."""
        if self.bundle_ref:
            return self.bundle_ref
        dep = self.deployment
        if dep is not None and dep.status in ("healthy", "applying") and dep.bundle_ref:
            return dep.bundle_ref
        return self.running.bundle_ref if self.running is not None else None

    def flat_ref(self) -> str | None:
        """``bundle@version`` from the flat ``bundle``/``version`` keys, or the bundle alone."""
        if self.bundle is None:
            return None
        return f"{self.bundle}@{self.version}" if self.version else self.bundle
