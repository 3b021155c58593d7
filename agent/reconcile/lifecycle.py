"""The deployment lifecycle on the device: pure transitions, no I/O and no clock.

This is the agent's mirror of ``hub/rollouts/machine.py``. The reconcile loop observes (the
desired revision, its deployment row, the deployment last written healthy, the containers),
asks a transition here what follows, and applies the answer (``Change``): the rows to write
and the events to record (``Record``), the health watch to keep, and what to do next. Every
rule about a deployment's status lives here, table- and property-tested in
tests/unit/test_lifecycle.py.

Rules:

- A deployment belongs to exactly one desired revision (``agent.precedence.Revision``). A
  revision seen for the first time is begun (``applying``), or ``failed`` at once when its
  bundle does not parse.
- Applying or healthy: run it. Failed or rolled back: run the deployment most recently
  written healthy (a rollback), or hold when there is none.
- An update gate (a lock, a maintenance window: ``agent.reconcile.gates``) may defer only
  the start of a revision (``gated``): never a revision already begun, nor a rollback,
  which returns to a deployment that exists. While a revision is deferred the deployment in
  force (``in_force``) keeps running, and nothing here changes.
- A newer desired revision supersedes the health watch. A deployment it was watching (not a
  rollback) is marked ``failed`` ("superseded"), or a rollout waiting on that generation
  would wait forever — except a hub revision interrupted by a local override: that one
  comes back in force when the override is cleared, and marking it failed would make the
  device "roll back" to the last healthy deployment, the cleared override itself. It stays
  ``applying`` (``interrupted``): back in force, it is run and watched again; superseded by
  a newer hub revision instead, it is marked ``failed`` ("superseded") then.
- After a run that reached the target: an ``applying`` deployment is watched for its health
  window; a ``healthy`` one that is no longer the reported one (an override was cleared,
  say) is written ``applying`` again and watched, since its containers were replaced; a
  rollback target not yet reported is watched as a rollback.
- A failed run counts against the revision unless the engine was lost or a pull failed (no
  network yet says nothing about the bundle). A full disk, ``max_apply_failures`` counted
  failures, or a failed pull under kill-then-download (the old containers are gone already)
  give up on an ``applying`` revision: it is rolled back (``failed`` with nothing to roll
  back to). Otherwise the run is retried after a back-off.
- The watch's verdict: healthy marks the deployment ``healthy`` (and images can be pruned);
  failed rolls it back; a rollback target that fails is ``failed`` and the next run goes
  further back, or holds.
- ``failed`` and ``rolled_back`` are final for a deployment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent.precedence import Revision
from agent.reconcile.health import Verdict
from agent.reconcile.plan import Target
from agent.reconcile.ports import Deployment, DeploymentStatus, Severity
from agent.runtime.base import LABEL_SPEC_HASH, ObservedContainer
from bundles import BundleError, from_dict
from bundles.model import BundleSpec
from bundles.variables import VariableError, pin, references
from sbutil.text import plural

# Which status a deployment row may be written with, by the status it has (None: no row).
# healthy -> healthy: a rollback target proven healthy again is written again, so that it is
# the deployment the device reports.
LEGAL: Mapping[DeploymentStatus | None, frozenset[DeploymentStatus]] = {
    None: frozenset({"applying", "failed"}),
    "applying": frozenset({"healthy", "failed", "rolled_back"}),
    "healthy": frozenset({"applying", "healthy", "failed"}),
    "failed": frozenset(),
    "rolled_back": frozenset(),
}


# -- what a transition asks the loop to record ------------------------------------------------
@dataclass(frozen=True)
class Begin:
    """Write a new deployment row for ``revision`` (status ``applying``)."""

    revision: Revision
    bundle_ref: str | None
    spec: dict[str, Any] | None


@dataclass(frozen=True)
class SetStatus:
    revision: Revision
    status: DeploymentStatus
    reason: str | None


@dataclass(frozen=True)
class Emit:
    kind: str
    message: str
    severity: Severity = "info"
    data: Mapping[str, Any] = field(default_factory=dict)


Record = Begin | SetStatus | Emit
# A revision's per-device values: (variables, secret fingerprints) (bundles.variables).
Values = tuple[Mapping[str, str], Mapping[str, str]]


# -- the state the loop keeps in memory between runs -------------------------------------------
@dataclass(frozen=True)
class Watch:
    """A deployment held to its health window (in memory: a restart opens a new one)."""

    revision: Revision  # the deployment this watch decides
    target: Target
    deadline: float  # monotonic
    window: float
    rollback_of: Revision | None  # set when this watches a rollback
    opened_wall: float
    baseline_restarts: Mapping[str, int] = field(default_factory=dict)
    crashes: Mapping[str, int] = field(default_factory=dict)

    @property
    def generation(self) -> int:
        return self.revision.generation


@dataclass(frozen=True)
class Lifecycle:
    revision: Revision | None = None  # the desired revision seen last
    watch: Watch | None = None
    apply_failures: Mapping[Revision, int] = field(default_factory=dict)  # counted, by revision
    # A hub revision whose watch a local override took over, left applying: it returns when
    # the override is cleared (in memory only: after a restart it is simply run again).
    interrupted: Revision | None = None


@dataclass(frozen=True)
class Change:
    """A transition's answer: the new state, what to record (in order), and what next."""

    state: Lifecycle
    records: tuple[Record, ...] = ()
    trigger: str | None = None  # ask for another run now (e.g. "rollback")
    retry: bool = False  # run again after the error back-off
    prune: Revision | None = None  # this deployment is healthy: unused images may go


@dataclass(frozen=True)
class Choice:
    """Which deployment a run converges to: ``target`` of ``deployment``, or ``held``."""

    records: tuple[Record, ...]
    target: Target | None
    deployment: Revision | None
    held: str | None = None


@dataclass(frozen=True)
class Run:
    """One reconcile run: the desired revision and the deployment it converged to."""

    desired: Revision
    deployment: Revision
    target: Target
    trigger: str
    steps: int  # steps planned (and run); 0: nothing to do

    @property
    def rolling_back(self) -> bool:
        return self.deployment != self.desired

    @property
    def ref(self) -> str | None:
        return f"{self.target.bundle}@{self.target.version}" if self.target.bundle else None


@dataclass(frozen=True)
class Failure:
    """Why a run failed, as far as the lifecycle cares."""

    reason: str
    pull_failed: bool = False
    disk_full: bool = False
    engine_down: bool = False


# -- transitions -------------------------------------------------------------------------------
def desired(state: Lifecycle, rev: Revision) -> Change:
    """The desired revision a run sees; a new one supersedes the watch."""
    if rev == state.revision:
        return Change(state)
    old = state.watch
    records: list[Record] = []
    interrupted = state.interrupted
    if interrupted is not None and interrupted != rev and rev.source == "hub":
        # The override's revision went away for a newer hub one: the interrupted revision
        # will never be in force again.
        reason = f"superseded by {rev.describe()} before it was healthy"
        records.append(SetStatus(interrupted, "failed", reason))
    if interrupted == rev or rev.source == "hub":
        interrupted = None
    if old is not None and old.rollback_of is None and old.revision != rev:
        if rev.source == "local" and old.revision.source == "hub":
            interrupted = old.revision
        else:
            reason = f"superseded by {rev.describe()} before it was healthy"
            records.append(SetStatus(old.revision, "failed", reason))
    return Change(replace(state, revision=rev, watch=None, interrupted=interrupted), tuple(records))


def choose(
    rev: Revision,
    spec: dict[str, Any] | None,
    dep: Deployment | None,
    last_healthy: Deployment | None,
    values: Values | None = None,
) -> Choice:
    """The deployment to converge to for desired revision ``rev`` (``spec``: its bundle).

    ``dep`` is the deployment of exactly ``rev`` (None: not begun), ``last_healthy`` the one
    most recently written healthy other than it. ``values``: the revision's per-device
    variables and secret fingerprints; a new deployment records the spec with them pinned
    (``bundles.variables.pin``), so its spec hashes change when a value does.
    """
    records: tuple[Record, ...] = ()
    if dep is None:
        records, status, reason, parsed = _begin(rev, spec, values)
        if status == "applying":
            return Choice(records, Target.from_spec(parsed), rev)
    else:
        status, reason = dep.status, dep.reason
        if status in ("applying", "healthy"):
            return Choice(records, target_of(dep), rev)
    if last_healthy is None:
        why = f"{rev.describe()} {status} ({reason}); no earlier healthy deployment to roll back to"
        return Choice(records, None, None, why)
    return Choice(records, target_of(last_healthy), last_healthy.revision)


def gated(dep: Deployment | None) -> bool:
    """May an update gate defer this revision? Only its start (``dep``: its deployment)."""
    return dep is None


def in_force(latest: Deployment | None, last_healthy: Deployment | None) -> Deployment | None:
    """What runs while a new revision is deferred: the deployment the device reports, if it
    is applying or healthy, else the one last written healthy."""
    if latest is not None and latest.status in ("applying", "healthy"):
        return latest
    return last_healthy


def _begin(
    rev: Revision, spec: dict[str, Any] | None, values: Values | None = None
) -> tuple[tuple[Record, ...], DeploymentStatus, str | None, BundleSpec | None]:
    data = {"generation": rev.generation, "source": rev.source}
    if spec is None:
        parsed = None
    else:
        try:
            if values is not None or references(spec):
                variables, fingerprints = values or ({}, {})
                spec = pin(spec, variables, fingerprints)
            parsed = from_dict(spec)
        except VariableError as exc:
            reason = f"desired bundle cannot be resolved for this device: {exc}"
            failed = SetStatus(rev, "failed", reason)
            told = Emit("reconcile.failed", reason, "error", data)
            return (Begin(rev, _ref(spec), spec), failed, told), "failed", reason, None
        except BundleError as exc:
            reason = f"desired bundle is invalid: {exc}"
            failed = SetStatus(rev, "failed", reason)
            told = Emit("reconcile.failed", reason, "error", data)
            return (Begin(rev, _ref(spec), spec), failed, told), "failed", reason, None
    started = Emit(
        "deployment.started",
        f"applying {rev.describe()}: {_ref(spec) or 'no bundle'}",
        data={**data, "bundle": _ref(spec)},
    )
    begun = Begin(rev, None if parsed is None else parsed.ref, spec)
    return (begun, started), "applying", None, parsed


def applied(
    state: Lifecycle,
    run: Run,
    dep: Deployment | None,
    *,
    reported: bool,
    observed: Sequence[ObservedContainer],
    window: float,
    now: float,
    now_wall: float,
) -> Change:
    """A run that reached its target (or had nothing to do): watch what needs watching.

    ``dep``: the deployment of ``run.deployment``; ``reported``: it is the one written last;
    ``window``: its health window; ``now``/``now_wall``: the monotonic and the wall clock."""
    records: list[Record] = []
    if run.steps:
        d = run.desired
        data = {"generation": d.generation, "source": d.source, "steps": run.steps}
        message = f"{run.ref or 'no bundle'}: {plural(run.steps, 'step')}"
        records.append(Emit("reconcile.succeeded", message, data={**data, "trigger": run.trigger}))
    rollback_of: Revision | None = None
    watch = False
    if dep is not None and not run.rolling_back:
        if dep.status == "applying":
            watch = True
        elif dep.status == "healthy" and not reported:
            records.append(SetStatus(run.deployment, "applying", None))
            watch = True
    elif run.rolling_back and not reported:
        watch, rollback_of = True, run.desired
    if watch and not (state.watch is not None and state.watch.revision == run.deployment):
        hashes = {s.service: s.spec_hash for s in run.target.services}
        opened = Watch(
            revision=run.deployment,
            target=run.target,
            deadline=now + window,
            window=window,
            rollback_of=rollback_of,
            opened_wall=now_wall,
            baseline_restarts={
                c.service: c.restart_count for c in observed if hashes.get(c.service) == c.spec_hash
            },
        )
        state = replace(state, watch=opened)
    return Change(state, tuple(records))


def run_failed(
    state: Lifecycle,
    run: Run,
    dep: Deployment | None,
    failure: Failure,
    last_healthy: Deployment | None,
    *,
    max_failures: int,
) -> Change:
    """A run that stopped at a failed step: retry it later, or give the revision up."""
    rev = run.desired
    data = {"generation": rev.generation, "source": rev.source}
    records: list[Record] = [Emit("reconcile.failed", failure.reason, "error", data)]
    pull_failed = failure.pull_failed
    # Neither a lost engine nor a failed pull (no network yet) says the bundle is bad.
    benign = failure.engine_down or (pull_failed and not failure.disk_full)
    count = state.apply_failures.get(rev, 0) + (0 if benign else 1)
    state = replace(state, apply_failures={**state.apply_failures, rev: count})
    destructive = run.target.strategy == "kill-then-download"
    give_up = failure.disk_full or count >= max_failures or (pull_failed and destructive)
    if not run.rolling_back and dep is not None and dep.status == "applying" and give_up:
        records += give_up_on(rev, failure.reason, last_healthy)
        if state.watch is not None and state.watch.revision == rev:
            # A later run of a watched revision failed for good: its verdict is given here,
            # and a late "healthy" from the watch must not revive a rolled-back row.
            state = replace(state, watch=None)
        return Change(state, tuple(records), trigger="rollback")
    return Change(state, tuple(records), retry=True)


def exited(
    state: Lifecycle,
    target: Target | None,
    service: str | None,
    attrs: Mapping[str, str],
    when: float,
    *,
    started_wall: float,
) -> Change:
    """An engine ``die`` event (``when``: wall clock) of one of this device's containers."""
    if target is None or service is None or when < started_wall - 1.0:
        return Change(state)  # an engine replaying history: not news
    want = next((s for s in target.services if s.service == service), None)
    if want is None or attrs.get(LABEL_SPEC_HASH) != want.spec_hash:
        return Change(state)  # one of ours we stopped on purpose (old version, duplicate)
    code = attrs.get("exitCode") or attrs.get("containerExitCode") or "?"
    record = Emit(
        "container.exited",
        f"{service} exited with code {code}",
        "warning" if code not in ("0", "?") else "info",
        {"service": service, "exit_code": code},
    )
    w = state.watch
    if w is not None and code != "0" and when >= w.opened_wall - 1.0:
        w = replace(w, crashes={**w.crashes, service: w.crashes.get(service, 0) + 1})
        state = replace(state, watch=w)
    return Change(state, (record,))


def crashes(watch: Watch, current: Mapping[str, ObservedContainer | None]) -> dict[str, int]:
    """Crashes per service since the watch opened: exits seen, or restarts the engine did."""
    return {
        s: max(
            watch.crashes.get(s, 0),
            (c.restart_count - watch.baseline_restarts.get(s, 0)) if c is not None else 0,
        )
        for s, c in current.items()
    }


def judged(state: Lifecycle, verdict: Verdict, last_healthy: Deployment | None = None) -> Change:
    """The health gate's verdict on the watched deployment. ``last_healthy``: the deployment
    most recently healthy other than the watched one (the rollback target if it failed)."""
    w = state.watch
    if w is None or verdict.decision == "wait":
        return Change(state)
    state = replace(state, watch=None)
    back = w.rollback_of
    data: dict[str, Any] = {"generation": w.generation, "source": w.revision.source}
    if verdict.decision == "healthy":
        t = w.target
        message = (
            (f"{t.bundle}@{t.version}" if t.bundle else "no bundle")
            + f" ({w.revision.describe()}) is healthy"
            + (f" after rolling back from {back.describe()}" if back is not None else "")
        )
        records: tuple[Record, ...] = (
            SetStatus(w.revision, "healthy", None),
            Emit(
                "deployment.healthy",
                message,
                data={**data, "rollback_of": None if back is None else back.generation},
            ),
        )
        return Change(state, records, prune=w.revision)
    if back is None:
        return Change(state, give_up_on(w.revision, verdict.reason, last_healthy), "rollback")
    # The rollback target failed too: mark it, and the next run goes further back or holds.
    records = (
        SetStatus(w.revision, "failed", verdict.reason),
        Emit(
            "rollback.failed",
            f"rollback to {w.revision.describe()} is not healthy: {verdict.reason}",
            "error",
            {**data, "reason": verdict.reason},
        ),
    )
    return Change(state, records, "rollback")


def give_up_on(rev: Revision, reason: str, prev: Deployment | None) -> tuple[Record, ...]:
    """``rev`` failed: roll back to ``prev`` (the last healthy deployment), or fail it."""
    gen = rev.generation
    if prev is None:
        return (
            SetStatus(rev, "failed", reason),
            Emit(
                "deployment.failed",
                f"{rev.describe()} failed: {reason}; nothing healthy to roll back to",
                "error",
                {"generation": gen, "source": rev.source, "reason": reason},
            ),
        )
    return (
        SetStatus(rev, "rolled_back", reason),
        Emit(
            "rollback",
            f"{rev.describe()} failed ({reason}); rolling back to {prev.bundle_ref} "
            f"({prev.revision.describe()})",
            "error",
            {
                "generation": gen,
                "source": rev.source,
                "to_generation": prev.generation,
                "to_source": prev.source,
                "to": prev.bundle_ref,
                "reason": reason,
            },
        ),
    )


# -- reading deployments ---------------------------------------------------------------------
def _ref(spec: Mapping[str, Any] | None) -> str | None:
    if not spec:
        return None
    return f"{spec.get('bundle')}@{spec.get('version')}"


def _spec_of(dep: Deployment) -> BundleSpec | None:
    return from_dict(dep.spec) if dep.spec is not None else None


def target_of(dep: Deployment) -> Target:
    return Target.from_spec(_spec_of(dep))


def window_of(dep: Deployment | None) -> float:
    """The deployment's bundle's health window (0 for "run nothing")."""
    spec = _spec_of(dep) if dep is not None else None
    return spec.update.health_window if spec is not None else 0.0


__all__ = [
    "LEGAL",
    "Begin",
    "Change",
    "Choice",
    "Emit",
    "Failure",
    "Lifecycle",
    "Record",
    "Run",
    "SetStatus",
    "Watch",
    "applied",
    "choose",
    "crashes",
    "desired",
    "exited",
    "gated",
    "give_up_on",
    "in_force",
    "judged",
    "run_failed",
    "target_of",
    "window_of",
]
