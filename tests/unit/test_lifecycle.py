"""The deployment lifecycle (agent/reconcile/lifecycle.py): tables of single transitions, then
hypothesis driving whole histories of revisions, runs, verdicts and exits through it against
a model of the deployment rows."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.precedence import Revision, Stored, effective, spec_hash
from agent.reconcile import lifecycle as lc
from agent.reconcile.health import Verdict
from agent.reconcile.plan import Target
from agent.reconcile.ports import Deployment, DeploymentStatus
from agent.runtime.base import LABEL_SPEC_HASH, ObservedContainer
from bundles import from_dict
from bundles.model import BundleSpec, ContainerSpec, UpdatePolicy


def spec(
    version: str, *, window: float = 30.0, strategy: str = "download-then-kill"
) -> dict[str, Any]:
    return BundleSpec(
        "app",
        f"{version}.0.0",
        (ContainerSpec("web", f"reg/web:{version}", network_mode="host"),),
        update=UpdatePolicy(health_window=window, strategy=strategy),  # type: ignore[arg-type]
    ).to_dict()


BAD_SPEC: dict[str, Any] = {"bundle": "app", "version": "9", "containers": "not a list"}


def rev(gen: int, doc: dict[str, Any] | None, source: str = "hub") -> Revision:
    return Revision(source, gen, spec_hash(doc))  # type: ignore[arg-type]


def dep(
    r: Revision, doc: dict[str, Any] | None, status: DeploymentStatus, reason: str | None = None
) -> Deployment:
    ref = None if doc is None else f"{doc['bundle']}@{doc['version']}"
    return Deployment(r.generation, ref, doc, status, reason, 0.0, None, r.source, r.spec_hash)


def target(doc: dict[str, Any] | None) -> Target:
    return Target.from_spec(None if doc is None else from_dict(doc))


def kinds(records: tuple[lc.Record, ...]) -> list[str]:
    out = []
    for r in records:
        if isinstance(r, lc.Emit):
            out.append(r.kind)
        elif isinstance(r, lc.SetStatus):
            out.append(f"set:{r.status}")
        else:
            out.append("begin")
    return out


V1, V2 = spec("1"), spec("2")
R1, R2 = rev(1, V1), rev(2, V2)
HEALTHY1 = dep(R1, V1, "healthy")


def watch(r: Revision, doc: dict[str, Any] | None, rollback_of: Revision | None = None) -> lc.Watch:
    return lc.Watch(r, target(doc), deadline=100.0, window=30.0, rollback_of=rollback_of,
                    opened_wall=1000.0)  # fmt: skip


# --- choose: which deployment a run converges to ---------------------------------------------
@pytest.mark.parametrize(
    ("doc", "existing", "last", "want_kinds", "want_dep", "held"),
    [
        # a new revision is begun and run
        (V2, None, None, ["begin", "deployment.started"], R2, None),
        (None, None, None, ["begin", "deployment.started"], "self", None),
        # an invalid bundle fails at once; with something healthy the device rolls back to it
        (BAD_SPEC, None, HEALTHY1, ["begin", "set:failed", "reconcile.failed"], R1, None),
        (BAD_SPEC, None, None, ["begin", "set:failed", "reconcile.failed"], None,
         "no earlier healthy deployment"),
        # begun already: applying or healthy runs, failed or rolled back runs the last healthy
        (V2, "applying", HEALTHY1, [], R2, None),
        (V2, "healthy", HEALTHY1, [], R2, None),
        (V2, "rolled_back", HEALTHY1, [], R1, None),
        (V2, "failed", None, [], None, "hub generation 2 failed (boom)"),
    ],
)  # fmt: skip
def test_choose(
    doc: dict[str, Any] | None,
    existing: DeploymentStatus | None,
    last: Deployment | None,
    want_kinds: list[str],
    want_dep: Revision | str | None,
    held: str | None,
) -> None:
    r = rev(2, doc)
    row = None if existing is None else dep(r, doc, existing, "boom")
    choice = lc.choose(r, doc, row, last)
    assert kinds(choice.records) == want_kinds
    assert choice.deployment == (r if want_dep == "self" else want_dep)
    assert (choice.target is None) == (choice.deployment is None)
    if held is None:
        assert choice.held is None
    else:
        assert choice.held is not None and held in choice.held


def test_only_the_start_of_a_revision_is_gated() -> None:
    assert lc.gated(None)
    for status in ("applying", "healthy", "failed", "rolled_back"):
        assert not lc.gated(dep(R2, V2, status))  # type: ignore[arg-type]
    # while deferred, what the device reports keeps running, else the last healthy
    applying = dep(R2, V2, "applying")
    assert lc.in_force(applying, HEALTHY1) == applying
    assert lc.in_force(dep(R2, V2, "rolled_back"), HEALTHY1) == HEALTHY1
    assert lc.in_force(None, None) is None


def test_choose_runs_the_rollback_targets_bundle() -> None:
    choice = lc.choose(R2, V2, dep(R2, V2, "rolled_back"), HEALTHY1)
    assert choice.target == target(V1)


# --- desired: a newer revision supersedes the watch ------------------------------------------
def test_desired() -> None:
    state = lc.Lifecycle(R1, watch(R1, V1))
    assert lc.desired(state, R1) == lc.Change(state)  # the same revision: nothing happens
    change = lc.desired(state, R2)
    assert change.state == lc.Lifecycle(R2, None)
    assert change.records == (
        lc.SetStatus(R1, "failed", "superseded by hub generation 2 before it was healthy"),
    )
    # a rollback being watched is no one's rollout: dropped without a word
    rolling = lc.Lifecycle(R2, watch(R1, V1, rollback_of=R2))
    r3 = rev(3, V1)
    assert lc.desired(rolling, r3) == lc.Change(lc.Lifecycle(r3, None))


def test_a_local_override_interrupts_a_hub_revision_without_closing_it() -> None:
    """A field override during a rollout's health window: the hub revision is left applying
    (it returns when the override is cleared); a newer hub revision closes it then."""
    local = rev(3, V1, "local")
    state = lc.Lifecycle(R2, watch(R2, V2))
    change = lc.desired(state, local)
    assert (change.records, change.state) == ((), lc.Lifecycle(local, None, interrupted=R2))
    back = lc.desired(change.state, R2)  # `apply --clear`
    assert (back.records, back.state) == ((), lc.Lifecycle(R2, None))
    r4 = rev(4, V1)
    newer = lc.desired(change.state, r4)
    assert newer.records == (
        lc.SetStatus(R2, "failed", "superseded by hub generation 4 before it was healthy"),
    )
    assert newer.state == lc.Lifecycle(r4, None)


# --- applied: a run that reached its target --------------------------------------------------
@pytest.mark.parametrize(
    ("status", "rolling_back", "reported", "want_watch", "want_kinds"),
    [
        ("applying", False, True, True, []),
        ("healthy", False, True, False, []),
        # back to a revision healthy before (an override cleared): written and watched again
        ("healthy", False, False, True, ["set:applying"]),
        ("healthy", True, False, True, []),  # a rollback not yet reported is watched
        ("healthy", True, True, False, []),  # ... and afterwards is the steady state
    ],
)
def test_applied(
    status: DeploymentStatus,
    rolling_back: bool,
    reported: bool,
    want_watch: bool,
    want_kinds: list[str],
) -> None:
    dep_rev, doc = (R1, V1) if rolling_back else (R2, V2)
    run = lc.Run(R2, dep_rev, target(doc), "test", 0)
    c = ObservedContainer("c1", "n", "web", "app", "1", target(doc).services[0].spec_hash, "d",
                          "running", restart_count=4)  # fmt: skip
    change = lc.applied(
        lc.Lifecycle(R2), run, dep(dep_rev, doc, status), reported=reported, observed=[c],
        window=30.0, now=10.0, now_wall=1000.0,
    )  # fmt: skip
    assert kinds(change.records) == want_kinds
    w = change.state.watch
    assert (w is not None) == want_watch
    if w is not None:
        assert (w.revision, w.deadline, w.opened_wall) == (dep_rev, 40.0, 1000.0)
        assert w.rollback_of == (R2 if rolling_back else None)
        assert w.baseline_restarts == {"web": 4}


def test_applied_keeps_an_open_watch_and_says_what_ran() -> None:
    open_ = lc.Lifecycle(R2, watch(R2, V2))
    run = lc.Run(R2, R2, target(V2), "timer", 3)
    change = lc.applied(open_, run, dep(R2, V2, "applying"), reported=True, observed=[],
                        window=30.0, now=99.0, now_wall=0.0)  # fmt: skip
    assert change.state is open_  # the window is not reopened by a later run
    assert kinds(change.records) == ["reconcile.succeeded"]


# --- run_failed: retry, or give the revision up ----------------------------------------------
@pytest.mark.parametrize(
    ("failure", "strategy", "before", "want"),
    [
        (lc.Failure("x", engine_down=True), "download-then-kill", 2, "retry"),
        (lc.Failure("x", pull_failed=True), "download-then-kill", 2, "retry"),
        (lc.Failure("x", pull_failed=True), "kill-then-download", 0, "rollback"),
        (lc.Failure("x", pull_failed=True, disk_full=True), "download-then-kill", 0, "rollback"),
        (lc.Failure("x", disk_full=True), "download-then-kill", 0, "rollback"),
        (lc.Failure("x"), "download-then-kill", 0, "retry"),
        (lc.Failure("x"), "download-then-kill", 2, "rollback"),  # the third counted failure
    ],
)
def test_run_failed(failure: lc.Failure, strategy: str, before: int, want: str) -> None:
    doc = spec("2", strategy=strategy)
    r = rev(2, doc)
    run = lc.Run(r, r, target(doc), "test", 1)
    state = lc.Lifecycle(r, apply_failures={r: before})
    change = lc.run_failed(state, run, dep(r, doc, "applying"), failure, HEALTHY1, max_failures=3)
    assert change.records[0] == lc.Emit("reconcile.failed", "x", "error",
                                        {"generation": 2, "source": "hub"})  # fmt: skip
    if want == "retry":
        assert change.retry and change.trigger is None and len(change.records) == 1
    else:
        assert change.trigger == "rollback" and not change.retry
        assert kinds(change.records) == ["reconcile.failed", "set:rolled_back", "rollback"]


def test_a_failed_rollback_run_never_rolls_back_again() -> None:
    run = lc.Run(R2, R1, target(V1), "test", 1)  # converging to the rollback target
    change = lc.run_failed(lc.Lifecycle(R2), run, HEALTHY1, lc.Failure("x", disk_full=True),
                           None, max_failures=1)  # fmt: skip
    assert change.retry and kinds(change.records) == ["reconcile.failed"]


# --- exits and verdicts ----------------------------------------------------------------------
def test_exited() -> None:
    t = target(V2)
    attrs = {LABEL_SPEC_HASH: t.services[0].spec_hash, "exitCode": "1"}
    state = lc.Lifecycle(R2, watch(R2, V2))
    # history replayed from before the agent started, or a container stopped on purpose
    assert lc.exited(state, t, "web", attrs, 10.0, started_wall=500.0) == lc.Change(state)
    assert lc.exited(state, t, "web", {**attrs, LABEL_SPEC_HASH: "old"}, 2000.0,
                     started_wall=0.0) == lc.Change(state)  # fmt: skip
    crash = lc.exited(state, t, "web", attrs, 2000.0, started_wall=0.0)
    assert kinds(crash.records) == ["container.exited"]
    assert crash.state.watch is not None and crash.state.watch.crashes == {"web": 1}
    clean = lc.exited(state, t, "web", {**attrs, "exitCode": "0"}, 2000.0, started_wall=0.0)
    assert clean.state == state and clean.records[0].severity == "info"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("rollback_of", "decision", "last", "want_kinds", "trigger"),
    [
        (None, "healthy", None, ["set:healthy", "deployment.healthy"], None),
        (R2, "healthy", None, ["set:healthy", "deployment.healthy"], None),
        (None, "failed", HEALTHY1, ["set:rolled_back", "rollback"], "rollback"),
        (None, "failed", None, ["set:failed", "deployment.failed"], "rollback"),
        (R2, "failed", None, ["set:failed", "rollback.failed"], "rollback"),
    ],
)
def test_judged(
    rollback_of: Revision | None,
    decision: str,
    last: Deployment | None,
    want_kinds: list[str],
    trigger: str | None,
) -> None:
    watched = R1 if rollback_of else R2
    state = lc.Lifecycle(R2, watch(watched, V1 if rollback_of else V2, rollback_of))
    change = lc.judged(state, Verdict(decision, "why"), last)  # type: ignore[arg-type]
    assert kinds(change.records) == want_kinds
    assert change.trigger == trigger and change.state.watch is None
    assert change.prune == (watched if decision == "healthy" else None)
    waiting = lc.judged(state, Verdict("wait", "starting"))
    assert waiting == lc.Change(state)


def test_crashes_count_exits_or_engine_restarts() -> None:
    w = replace(watch(R2, V2), baseline_restarts={"web": 2}, crashes={"web": 1})
    c = ObservedContainer("c", "n", "web", "app", "2", "h", "d", "running", restart_count=5)
    assert lc.crashes(w, {"web": c, "db": None}) == {"web": 3, "db": 0}


# --- properties: whole histories against a model of the rows ---------------------------------
@dataclass
class Rows:
    """The deployment rows as a store keeps them, checking every write is legal."""

    rows: dict[Revision, Deployment] = field(default_factory=dict)
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def apply(self, records: tuple[lc.Record, ...]) -> None:
        for r in records:
            if isinstance(r, lc.Begin):
                assert r.revision not in self.rows, "a revision is begun once"
                self.rows[r.revision] = Deployment(
                    r.revision.generation, r.bundle_ref, r.spec, "applying", None, 0.0, None,
                    r.revision.source, r.revision.spec_hash, next(self.seq),
                )  # fmt: skip
            elif isinstance(r, lc.SetStatus):
                old = self.rows[r.revision]
                assert r.status in lc.LEGAL[old.status], f"{old.status} -> {r.status}"
                self.rows[r.revision] = replace(old, status=r.status, reason=r.reason,
                                                seq=next(self.seq))  # fmt: skip

    def last_healthy(self, other_than: Revision) -> Deployment | None:
        ok = [d for d in self.rows.values() if d.status == "healthy" and d.revision != other_than]
        return max(ok, key=lambda d: d.seq, default=None)

    def latest(self) -> Deployment | None:
        return max(self.rows.values(), key=lambda d: d.seq, default=None)


def no_event_lost(change_records: tuple[lc.Record, ...]) -> None:
    """Every deployment that ends (or begins) is told to the hub in the same transition,
    except a superseded one (the next revision's own events say it)."""
    emitted = {
        (r.data.get("generation"), r.data.get("source"))
        for r in change_records
        if isinstance(r, lc.Emit)
    }
    for r in change_records:
        if isinstance(r, lc.SetStatus) and r.status != "applying":
            if r.reason and r.reason.startswith("superseded"):
                continue
            assert (r.revision.generation, r.revision.source) in emitted, r
        if isinstance(r, lc.Begin):
            assert (r.revision.generation, r.revision.source) in emitted, r


DOCS = [V1, V2, spec("3"), None, BAD_SPEC, spec("4", strategy="kill-then-download")]
op = st.one_of(
    # the doc to store, and whether an update gate defers it (n >= len(DOCS))
    st.tuples(st.just("desire"), st.sampled_from(["hub", "local"]), st.integers(0, 11)),
    st.tuples(st.just("run_ok"), st.booleans(), st.just(0)),
    st.tuples(
        st.just("run_failed"),
        st.sampled_from(
            [
                lc.Failure("x"),
                lc.Failure("x", pull_failed=True),
                lc.Failure("x", disk_full=True),
                lc.Failure("x", engine_down=True),
            ]
        ),
        st.just(0),
    ),
    st.tuples(st.just("verdict"), st.sampled_from(["wait", "healthy", "failed"]), st.just(0)),
    st.tuples(st.just("exit"), st.sampled_from(["0", "1", "137"]), st.just(0)),
    # `signalbeam-agent apply --clear`: the field override goes, the hub's revision returns
    st.tuples(st.just("clear"), st.just(None), st.integers(0, 5)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(op, min_size=1, max_size=40))
def test_histories_keep_the_rules(ops: list[tuple[str, Any, int]]) -> None:
    rows = Rows()
    state = lc.Lifecycle()
    stored: list[Stored] = []
    docs: dict[int, tuple[int, dict[str, Any] | None]] = {}  # order -> (generation, doc)
    run: lc.Run | None = None

    def step(change: lc.Change) -> lc.Lifecycle:
        no_event_lost(change.records)
        rows.apply(change.records)
        return change.state

    for kind, arg, n in ops:
        if kind == "clear":
            stored = [replace(s, cleared=True) if s.source == "local" else s for s in stored]
            if effective(stored) is None:
                continue
        if kind in ("desire", "clear"):
            # a new stored revision; precedence says which one the device must run
            if kind == "desire":
                order = len(stored) + 1
                gen = 1 + max((s.generation for s in stored), default=0) if arg == "hub" else order
                stored.append(Stored(order, arg, gen))
                docs[order] = (gen, DOCS[n % len(DOCS)])
            top = effective(stored)
            assert top is not None
            gen, doc = docs[top.order]
            want = Revision(top.source, gen, spec_hash(doc))
            before = rows.rows.get(want)
            if n >= len(DOCS) and lc.gated(before):  # an update gate says "not now"
                # deferred: what is in force keeps running, and nothing is written
                in_force = lc.in_force(rows.latest(), rows.last_healthy(want))
                assert before is None
                run = None
                if in_force is not None:
                    target = lc.target_of(in_force)
                    run = lc.Run(want, in_force.revision, target, "desired", 0)
                continue
            state = step(lc.desired(state, want))
            # a newer revision wins: nothing older stays watched, except as its rollback
            assert state.revision == want
            choice = lc.choose(want, doc, before, rows.last_healthy(want))
            no_event_lost(choice.records)
            rows.apply(choice.records)
            run = None
            if choice.target is not None and choice.deployment is not None:
                run = lc.Run(want, choice.deployment, choice.target, "desired", 1)
                # rollback is never blocked, by a gate or anything else
                if before is not None and before.status in ("failed", "rolled_back"):
                    assert run.rolling_back
            elif before is not None and before.status in ("failed", "rolled_back"):
                assert rows.last_healthy(want) is None, "a rollback target was not used"
            # a hub revision back in force once an override is cleared runs itself, never
            # a "rollback" to the last healthy deployment (the cleared override, say)
            if before is not None and before.status == "applying":
                assert run is not None and run.deployment == want
        elif kind == "run_ok" and run is not None:
            latest = rows.latest()
            state = step(lc.applied(
                state, run, rows.rows.get(run.deployment),
                reported=latest is not None and latest.revision == run.deployment,
                observed=[], window=30.0, now=0.0, now_wall=0.0,
            ))  # fmt: skip
        elif kind == "run_failed" and run is not None:
            state = step(lc.run_failed(state, run, rows.rows.get(run.deployment), arg,
                                       rows.last_healthy(run.desired), max_failures=2))  # fmt: skip
        elif kind == "verdict" and state.watch is not None:
            last = rows.last_healthy(state.watch.revision)
            state = step(lc.judged(state, Verdict(arg, "why"), last))
        elif kind == "exit" and run is not None:
            hashes = [s.spec_hash for s in run.target.services]
            attrs = {LABEL_SPEC_HASH: hashes[0] if hashes else "", "exitCode": arg}
            state = step(lc.exited(state, run.target, "web", attrs, 1.0, started_wall=0.0))
        # a field override never closes a hub revision: it may come back when cleared
        for d in rows.rows.values():
            assert not (d.source == "hub" and (d.reason or "").startswith("superseded by local"))
        # the watch is always of the desired revision, or of its rollback
        w = state.watch
        if w is not None:
            assert w.revision == state.revision or w.rollback_of == state.revision
            assert rows.rows[w.revision].status in ("applying", "healthy")
