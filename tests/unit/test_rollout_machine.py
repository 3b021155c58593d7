"""The rollout state machine (hub/rollouts/machine.py): tables of single steps, then
hypothesis driving whole rollouts through random reports and operator actions."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.rollouts import machine as m
from hub.rollouts.machine import Observation, Rollout, Target

ONE = Rollout(max_failures=m.Share(count=1))
OK = Observation(7, "healthy")
APPLYING = Observation(7, "applying")
ACKED = Observation(7)
BAD = Observation(7, "rolled_back", "relay unhealthy for 60s")
BROKEN = Observation(7, "failed", "pull failed")
LOCKED = "locked by anna since 2026-12-05T01:00+01:00"
WIN = "outside maintenance window until 2026-12-05T02:00+01:00"


# --- one device --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "want"),
    [
        (Target("d", 2), (m.PENDING, "waiting for phase 2")),
        (
            Target("d", 1, written=True),
            (m.PENDING, "desired state written; waiting for the device"),
        ),
        (
            Target("d", 1, written=True, online=False),
            (m.PENDING, "device offline; it updates when it comes back"),
        ),
        (Target("d", 1, written=True, observation=ACKED), (m.UPDATING, "applying generation 7")),
        (Target("d", 1, written=True, observation=APPLYING), (m.UPDATING, "applying generation 7")),
        (Target("d", 1, written=True, observation=OK), (m.SUCCEEDED, "")),
        (
            Target("d", 1, written=True, observation=BAD),
            (m.FAILED, "rolled back: relay unhealthy for 60s"),
        ),
        (Target("d", 1, written=True, observation=BROKEN), (m.FAILED, "failed: pull failed")),
        (
            Target("d", 1, written=True, observation=Observation(7, "failed")),
            (m.FAILED, "failed: no reason given"),
        ),
        # a device retired mid-rollout will never report: it fails rather than hold its phase
        (Target("d", 2, decommissioned=True), (m.FAILED, "device decommissioned")),
        (Target("d", 1, m.SUCCEEDED, "", True, decommissioned=True), (m.SUCCEEDED, "")),
        # final states stick, whatever comes later
        (Target("d", 1, m.SUCCEEDED, "", True, observation=BAD), (m.SUCCEEDED, "")),
        (Target("d", 1, m.FAILED, "failed: x", True, observation=OK), (m.FAILED, "failed: x")),
        # acknowledged but held by the device's lock or window: not started, not failed
        (
            Target("d", 1, written=True, observation=replace(ACKED, deferred=LOCKED)),
            (m.PENDING, f"deferred: {LOCKED}"),
        ),
        (
            Target("d", 1, written=True, online=False, observation=replace(ACKED, deferred=WIN)),
            (m.PENDING, f"deferred: {WIN}"),
        ),
        # a verdict is what counts
        (Target("d", 1, written=True, observation=replace(OK, deferred=LOCKED)), (m.SUCCEEDED, "")),
        # an offline device that already acknowledged keeps its progress
        (
            Target("d", 1, written=True, online=False, observation=APPLYING),
            (m.UPDATING, "applying generation 7"),
        ),
    ],
)
def test_device_state(target: Target, want: tuple[str, str]) -> None:
    assert m.device_state(target) == want


# --- the canary ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("total", "percent", "want"),
    [(0, 10, 0), (10, 0, 10), (10, 100, 10), (10, 10, 1), (10, 15, 2), (3, 10, 1), (1, 50, 1),
     (200, 1, 2), (7, 99, 7)],
)  # fmt: skip
def test_canary_size(total: int, percent: int, want: int) -> None:
    assert m.canary_size(total, percent) == want


def test_canary_prefers_online_devices() -> None:
    phases = m.plan_phases(["a", "b", "c", "d"], m.canary_phases(50), online={"c", "d"})
    assert phases == {"c": 1, "d": 1, "a": 2, "b": 2}
    assert m.plan_phases(["a", "b"], m.canary_phases(0)) == {"a": 1, "b": 1}


# --- one step of a rollout ---------------------------------------------------------------
def fleet(*states: tuple[int, str, bool]) -> list[Target]:
    """(phase, state, written) per device d0, d1, ..."""
    return [Target(f"d{i}", w, s, "", written) for i, (w, s, written) in enumerate(states)]


@pytest.mark.parametrize(
    ("rollout", "targets", "status", "start_phase"),
    [
        # nothing written yet: start the canary
        (Rollout(), fleet((1, m.PENDING, False), (2, m.PENDING, False)), m.RUNNING, 1),
        # canary still updating: wait
        (Rollout(), fleet((1, m.UPDATING, True), (2, m.PENDING, False)), m.RUNNING, None),
        # canary succeeded: the rest
        (Rollout(), fleet((1, m.SUCCEEDED, True), (2, m.PENDING, False)), m.RUNNING, 2),
        # canary failed beyond the threshold (0): paused, nothing more starts
        (Rollout(), fleet((1, m.FAILED, True), (2, m.PENDING, False)), m.PAUSED, None),
        # one failure tolerated: go on
        (ONE, fleet((1, m.FAILED, True), (2, m.PENDING, False)), m.RUNNING, 2),
        # all done, none failed
        (Rollout(), fleet((1, m.SUCCEEDED, True), (2, m.SUCCEEDED, True)), m.DONE, None),
        # all done within the threshold, some failed
        (
            ONE,
            fleet((1, m.SUCCEEDED, True), (2, m.FAILED, True)),
            m.FAILED_ROLLOUT,
            None,
        ),
        # failures a resume accepted do not count again
        (
            Rollout(failures_accepted=1),
            fleet((1, m.FAILED, True), (2, m.PENDING, False)),
            m.RUNNING,
            2,
        ),
        # paused by an operator: devices still progress, no phase starts
        (Rollout(m.PAUSED), fleet((1, m.SUCCEEDED, True), (2, m.PENDING, False)), m.PAUSED, None),
        # final rollouts never change
        (Rollout(m.ABORTED), fleet((1, m.PENDING, False)), m.ABORTED, None),
        (Rollout(m.DONE), fleet((1, m.SUCCEEDED, True)), m.DONE, None),
        # an empty rollout has nothing to do
        (Rollout(), [], m.DONE, None),
    ],
)
def test_step(
    rollout: Rollout, targets: list[Target], status: str, start_phase: int | None
) -> None:
    d = m.step(rollout, targets)
    assert (d.status, d.start_phase) == (status, start_phase)


def test_pause_reason_names_the_threshold() -> None:
    d = m.step(ONE, fleet(*[(1, m.FAILED, True)] * 2))
    assert d.status == m.PAUSED
    assert "2 devices failed, more than max-failures 1" in d.reason


def test_step_reports_which_devices_changed() -> None:
    targets = [
        Target("a", 1, written=True, observation=OK),
        Target("b", 1, written=True, reason="desired state written; waiting for the device"),
    ]
    d = m.step(Rollout(), targets)
    assert d.changed == ("a",)
    assert [t.state for t in d.targets] == [m.SUCCEEDED, m.PENDING]


# --- operator actions --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("action", "status", "allowed"),
    [
        ("pause", m.RUNNING, True),
        ("pause", m.PAUSED, False),
        ("pause", m.DONE, False),
        ("resume", m.PAUSED, True),
        ("resume", m.RUNNING, False),
        ("resume", m.ABORTED, False),
        ("abort", m.RUNNING, True),
        ("abort", m.PAUSED, True),
        ("abort", m.FAILED_ROLLOUT, True),
        ("abort", m.DONE, False),
        ("abort", m.ABORTED, False),
    ],
)
def test_actions(action: str, status: str, allowed: bool) -> None:
    r = Rollout(status)

    def act() -> Rollout:
        if action == "pause":
            return m.pause(r)
        if action == "resume":
            return m.resume(r, fleet((1, m.FAILED, True)))
        return m.abort(r)

    if allowed:
        want = {"pause": m.PAUSED, "resume": m.RUNNING, "abort": m.ABORTED}[action]
        assert act().status == want
    else:
        with pytest.raises(m.TransitionError):
            act()


def test_resume_accepts_the_failures_so_far() -> None:
    r = m.resume(Rollout(m.PAUSED, reason="x"), fleet((1, m.FAILED, True), (1, m.FAILED, True)))
    assert (r.status, r.failures_accepted, r.reason) == (m.RUNNING, 2, "")


def test_restores_only_where_the_rollouts_assignment_is_still_current() -> None:
    written = [
        m.Written("a", 10, None),
        m.Written("b", 11, ("app", "1.0.0")),
        m.Written("c", 12, ("app", "1.0.0")),  # an operator re-assigned it since
    ]
    plan = m.restores(written, {"a": 10, "b": 11, "c": 99})
    assert plan == [m.Restore("a", None), m.Restore("b", ("app", "1.0.0"))]


# --- phases, limits, bake ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "total", "sizes"),
    [
        ("1%,10%,50%,100%", 10_000, [100, 900, 4000, 5000]),
        ("1%,10%,50%,100%", 10, [1, 4, 5]),  # 1% and 10% of 10 are both one device
        ("1%,10%,50%,100%", 1, [1]),
        ("5,50,100%", 1000, [5, 45, 950]),
        ("10%", 20, [2, 18]),  # the rest is one more phase
        ("2,5", 3, [2, 1]),
        ("0.5%,100%", 1000, [5, 995]),
        ("100%", 7, [7]),
    ],
)
def test_phase_sizes(spec: str, total: int, sizes: list[int]) -> None:
    steps = m.parse_phases(spec)
    assert m.phase_sizes(total, steps) == sizes
    plan = m.plan_phases([f"d{i:05d}" for i in range(total)], steps)
    # numbered from 1, without gaps, in the sizes planned
    assert sorted(set(plan.values())) == list(range(1, len(sizes) + 1))
    assert [list(plan.values()).count(n) for n in range(1, len(sizes) + 1)] == sizes


@pytest.mark.parametrize(
    "spec",
    ["", "1%,", "0%", "0", "10%,5%", "5,5", "101%", "1.234%", "abc", "1.5", ",".join(["1"] * 21)],
)
def test_bad_phases_are_refused(spec: str) -> None:
    with pytest.raises(m.SpecError):
        m.parse_phases(spec)


def test_the_canary_is_two_phases() -> None:
    assert m.canary_phases(10) == m.parse_phases("10%,100%")
    assert m.canary_phases(0) == m.canary_phases(100) == m.parse_phases("100%")
    for total in range(0, 60):
        for pct in (0, 1, 10, 33, 50, 99, 100):
            sizes = m.phase_sizes(total, m.canary_phases(pct))
            assert m.canary_size(total, pct) == (sizes[0] if sizes else 0)


@pytest.mark.parametrize(
    ("limit", "size", "allowed"),
    [("2", 1000, 2), ("2%", 1000, 20), ("2%", 49, 0), ("2%", 50, 1), ("2.5%", 100, 2),
     ("0", 10, 0), ("100%", 3, 3), ("0.01%", 10_000, 1), (3, 1, 3)],
)  # fmt: skip
def test_allowed_failures(limit: str | int, size: int, allowed: int) -> None:
    assert m.allowed_failures(m.parse_share(limit), size) == allowed


def phased(*sizes: int) -> tuple[list[Target], tuple[m.Phase, ...]]:
    targets = [Target(f"p{n}-{i}", n) for n, size in enumerate(sizes, start=1) for i in range(size)]
    return targets, m.phases_of(targets)


def test_a_phase_bakes_before_the_next_starts() -> None:
    r = Rollout(bake=600)
    targets, plan = phased(1, 3)
    d = m.step(r, targets, plan, now=100)
    assert d.start_phase == 1 and d.phases[0].started_at == 100
    targets = [replace(t, written=t.phase == 1, observation=OK) for t in d.targets]
    d = m.step(r, targets, d.phases, now=200)
    assert d.start_phase is None and d.phases[0].completed_at == 200  # bake starts
    started = {1}
    assert m.phase_state(d.phases[0], d.phases, started, 600, 500) == m.PHASE_BAKING
    assert m.bake_left(d.phases[0], 600, 500) == 300
    d = m.step(r, list(d.targets), d.phases, now=799.9)
    assert d.start_phase is None
    d = m.step(r, list(d.targets), d.phases, now=800)
    assert d.start_phase == 2 and d.phases[1].started_at == 800


def test_a_device_unhealthy_while_baking_fails_and_pauses() -> None:
    r = Rollout(bake=60)
    targets, plan = phased(2, 2)
    plan = (replace(plan[0], started_at=0, completed_at=10), plan[1])
    targets = [replace(t, written=True, state=m.SUCCEEDED) if t.phase == 1 else t for t in targets]
    sick = Observation(unhealthy="1 container not healthy (relay)")
    targets[0] = replace(targets[0], observation=sick)
    d = m.step(r, targets, plan, now=30)
    assert d.targets[0].state == m.FAILED
    assert d.targets[0].reason == "unhealthy while baking: 1 container not healthy (relay)"
    assert d.status == m.PAUSED and d.start_phase is None
    # a bad snapshot seen after the bake time but before the next phase starts still
    # counts (the evidence awaited after the bake may bring it)
    d = m.step(r, targets, plan, now=71)
    assert d.targets[0].state == m.FAILED and d.start_phase is None
    # once the next phase started, a Succeeded device is final again
    started = [replace(t, written=True) for t in targets]
    d = m.step(r, started, plan, now=72)
    assert d.targets[0].state == m.SUCCEEDED


def test_percent_limit_holds_per_phase_and_overall() -> None:
    # 2% of a 100-device phase is 2 failures; the third pauses, naming the phase
    r = Rollout(max_failures=m.parse_share("2%"))
    targets, plan = phased(10, 100, 890)
    targets = [replace(t, written=True, state=m.SUCCEEDED) if t.phase <= 2 else t for t in targets]
    for i in (10, 11):
        targets[i] = replace(targets[i], state=m.FAILED)
    assert m.step(r, targets, plan).status == m.RUNNING
    targets[12] = replace(targets[12], state=m.FAILED)
    d = m.step(r, targets, plan)
    assert d.status == m.PAUSED
    assert d.reason.startswith("phase 2 of 3: 3 of 100 devices failed, more than max-failures 2%")
    # a one-device phase tolerates no failure at 2% (floor), whatever the fleet
    targets, plan = phased(1, 99)
    targets[0] = replace(targets[0], written=True, state=m.FAILED)
    assert m.step(r, targets, plan).reason.startswith("phase 1 of 2: 1 of 1 device failed")


def test_resume_accepts_the_phase_failures_and_bakes_again() -> None:
    targets, plan = phased(2, 2)
    targets = [replace(t, written=True, state=m.FAILED) if t.phase == 1 else t for t in targets]
    plan = (replace(plan[0], started_at=1, completed_at=5), plan[1])
    d = m.step(Rollout(bake=60), targets, plan, now=10)
    assert d.status == m.PAUSED
    r = m.resume(Rollout(m.PAUSED, bake=60), list(d.targets))
    phases = m.resume_phases(plan, list(d.targets))
    assert phases[0].failures_accepted == 2 and phases[0].completed_at is None
    d = m.step(r, list(d.targets), phases, now=100)
    assert (d.status, d.start_phase, d.phases[0].completed_at) == (m.RUNNING, None, 100)
    assert m.step(r, list(d.targets), d.phases, now=160).start_phase == 2


def test_a_baked_phase_waits_for_word_from_each_device_after_the_bake() -> None:
    r = Rollout(max_failures=m.Share(count=0), bake=10.0)
    targets = [Target("a", 1, written=True, observation=OK, heard_at=5.0), Target("b", 2)]
    d = m.step(r, targets, (m.Phase(1, 1, 0.0), m.Phase(2, 1)), now=0)
    assert d.phases[0].completed_at == 0
    d = m.step(r, d.targets, d.phases, now=20)
    assert d.start_phase is None  # last heard at 5 s, the bake ended at 10 s
    assert d.reason == (
        "phase 1 baked; waiting to hear from 1 device after 1970-01-01T00:00:10Z: a,"
        " last heard 1970-01-01T00:00:05Z"
    )
    assert m.watched_phases(d.phases, d.targets) == {1}  # its containers still watched
    sick = [replace(d.targets[0], observation=Observation(unhealthy="1 container not healthy"),
                    heard_at=21.0), d.targets[1]]  # fmt: skip
    d2 = m.step(r, sick, d.phases, now=21)
    assert d2.targets[0].state == m.FAILED and d2.status == m.PAUSED
    heard = [replace(d.targets[0], heard_at=21.0), d.targets[1]]
    assert m.step(r, heard, d.phases, now=21).start_phase == 2


def test_a_deferred_device_holds_its_phase_and_the_rollout_says_why() -> None:
    r = Rollout(max_failures=m.Share(count=0), bake=10.0)
    targets = [Target("a", 1), Target("b", 1), Target("c", 2)]
    d = m.step(r, targets, None, now=0)
    assert d.start_phase == 1
    targets = [replace(t, written=t.phase == 1) for t in d.targets]
    held = Observation(7, deferred=LOCKED)
    targets = [replace(targets[0], observation=OK), replace(targets[1], observation=held),
               targets[2]]  # fmt: skip
    d = m.step(r, targets, d.phases, now=1000)
    assert (d.status, d.start_phase) == (m.RUNNING, None)
    assert d.reason == f"phase 1 waits for 1 deferred device: b {LOCKED}"
    assert m.failures(d.targets) == 0
    # the lock released: the device applies, succeeds, the phase bakes, phase 2 starts
    targets = [replace(t, observation=OK) if t.device_id == "b" else t for t in d.targets]
    d = m.step(r, targets, d.phases, now=2000)
    assert (d.reason, d.start_phase) == ("", None)
    d = m.step(r, d.targets, d.phases, now=2010)
    assert d.start_phase == 2


# --- whole rollouts under random events --------------------------------------------------
EVENTS = st.lists(
    st.one_of(
        st.tuples(
            st.just("report"),
            st.integers(0, 9),
            st.sampled_from([None, "applying", "healthy", "failed", "rolled_back"]),
        ),
        st.tuples(st.just("online"), st.integers(0, 9), st.booleans()),
        st.tuples(st.just("sick"), st.integers(0, 9), st.booleans()),
        st.tuples(st.just("decommission"), st.integers(0, 9), st.just(None)),
        # the device's gate defers the revision (a lock, a window) or lets it start
        st.tuples(st.just("defer"), st.integers(0, 9), st.booleans()),
        # the hub hears from the device now (a heartbeat, a report), or lost track of it
        st.tuples(st.just("heard"), st.integers(0, 9), st.booleans()),
        st.tuples(st.just("time"), st.just(0), st.sampled_from([1.0, 5.0, 30.0])),
        st.tuples(st.sampled_from(["pause", "resume", "abort"]), st.just(0), st.just(None)),
    ),
    max_size=80,
)
STEPS = st.sampled_from(
    ["100%", "10%", "50%", "1%,10%,50%,100%", "1,2,100%", "1,50%", "2,3,4", "25%,50%,75%"]
)
LIMITS = st.sampled_from(["0", "1", "2", "3", "10%", "34%", "50%"])


@settings(max_examples=500, deadline=None)
@given(n=st.integers(1, 10), spec=STEPS, limit=LIMITS, bake=st.sampled_from([0.0, 10.0]),
       events=EVENTS)  # fmt: skip
def test_random_rollouts_keep_the_rules(
    n: int, spec: str, limit: str, bake: float, events: list[tuple[str, int, object]]
) -> None:
    numbers = m.plan_phases([f"d{i}" for i in range(n)], m.parse_phases(spec))
    targets = [Target(d, p) for d, p in sorted(numbers.items())]
    plan = m.phases_of(targets)
    share = m.parse_share(limit)
    rollout = Rollout(max_failures=share, bake=bake)
    now = 0.0
    ever_failed: set[str] = set()
    touched: set[str] = set()

    def apply(d: m.Decision) -> list[Target]:
        out = list(d.targets)
        if d.start_phase is not None:
            assert d.status == m.RUNNING
            # phases never overlap: one starts only when every device of the ones before it
            # is final and its bake is over; nothing of it or later was written before
            assert all(t.state in m.FINAL_DEVICE_STATES for t in out if t.phase < d.start_phase)
            prev = [p for p in d.phases if p.number == d.start_phase - 1]
            if prev:
                assert prev[0].completed_at is not None
                assert now >= prev[0].completed_at + bake
                # silence is not health: each of its Succeeded devices was heard from after
                # the bake ended
                end = prev[0].completed_at + bake
                for t in out:
                    if bake and t.phase == prev[0].number and t.state == m.SUCCEEDED:
                        assert t.heard_at >= end
            assert not any(t.written for t in out if t.phase >= d.start_phase)
            # phases start in order, numbered from 1
            started = {t.phase for t in out if t.written}
            assert started == set(range(1, d.start_phase))
            out = [replace(t, written=True) if t.phase == d.start_phase else t for t in out]
            touched.update(t.device_id for t in out if t.written)
        return out

    for kind, i, value in events:
        if kind == "report" and i < n and targets[i].written:
            gen = None if value is None else 7
            targets[i] = replace(targets[i], observation=Observation(gen, value, "why"))  # type: ignore[arg-type]
        elif kind == "online" and i < n:
            targets[i] = replace(targets[i], online=bool(value))
        elif kind == "sick" and i < n:
            sick = "1 container not healthy (x)" if value else None
            targets[i] = replace(
                targets[i], observation=replace(targets[i].observation, unhealthy=sick)
            )
        elif kind == "defer" and i < n and targets[i].written:
            obs = targets[i].observation
            gen = 7 if obs.generation is None else obs.generation
            why = "locked by anna since 2026-12-05T01:00+01:00" if value else None
            targets[i] = replace(targets[i], observation=replace(obs, generation=gen, deferred=why))
        elif kind == "heard" and i < n:
            targets[i] = replace(targets[i], heard_at=now if value else -1.0)
        elif kind == "decommission" and i < n:
            targets[i] = replace(targets[i], decommissioned=True)
        elif kind == "time":
            now += float(value)  # type: ignore[arg-type]
        elif kind in ("pause", "resume", "abort"):
            try:
                if kind == "pause":
                    rollout = m.pause(rollout)
                elif kind == "resume":
                    rollout = m.resume(rollout, targets)
                    plan = m.resume_phases(plan, targets)
                else:
                    rollout = m.abort(rollout)
            except m.TransitionError:
                pass
        before_written = sum(t.written for t in targets)
        d = m.step(rollout, targets, plan, now)
        if rollout.status in m.FINAL:
            assert d.status == rollout.status and d.start_phase is None
        targets = apply(d)
        plan = d.phases
        # a paused (or finished) rollout assigns nothing new
        if d.status != m.RUNNING:
            assert d.start_phase is None
            assert sum(t.written for t in targets) == before_written
        rollout = replace(rollout, status=d.status, reason=d.reason)
        failed = m.failures(targets)
        # never more failures than the limit while running, overall and in each phase,
        # by the one allowed_failures
        if rollout.status == m.RUNNING:
            assert failed - rollout.failures_accepted <= m.allowed_failures(share, n)
            for p in plan:
                here = m.failures(targets, p.number)
                assert here - p.failures_accepted <= m.allowed_failures(share, p.size)
        if rollout.status == m.DONE:
            assert all(t.state == m.SUCCEEDED for t in targets)
        if rollout.status == m.FAILED_ROLLOUT:
            assert all(t.state in m.FINAL_DEVICE_STATES for t in targets) and failed
        for t in targets:
            assert t.phase >= 1
            if not t.written and not t.decommissioned:
                assert t.state == m.PENDING
            if t.device_id in ever_failed:
                assert t.state == m.FAILED  # Failed sticks
            if t.state == m.FAILED:
                ever_failed.add(t.device_id)
        assert sum(m.counts(targets).values()) == n
        # a deferred device has not started: Pending with the device's words, never a
        # failure; and a running rollout held by one says so (never silently)
        held = [t for t in targets if m.deferred(t)]
        for t in held if rollout.status in m.ACTIVE else []:  # a final rollout's stay as they were
            assert t.written and t.observation.deferred
            assert t.observation.status in (None, "applying")
            assert t.reason == m.DEFERRED + t.observation.deferred
        current = max((t.phase for t in targets if t.written), default=0)
        if rollout.status == m.RUNNING and any(t.phase <= current for t in held):
            assert rollout.reason.startswith(f"phase {current} waits for ")
            assert min(t.device_id for t in held) in rollout.reason
    # abort restores every touched device (each written device's own assignment is still in
    # place here, as nobody else assigned)
    if rollout.status != m.DONE:
        rollout = m.abort(rollout) if rollout.status != m.ABORTED else rollout
        written = [
            m.Written(t.device_id, 100 + k, None) for k, t in enumerate(targets) if t.written
        ]
        current: dict[str, int | None] = {w.device_id: w.ours for w in written}
        assert {r.device_id for r in m.restores(written, current)} == touched
        d = m.step(rollout, targets, plan, now + 1000)
        assert d.start_phase is None and d.status == m.ABORTED


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.booleans(),  # rollout assignment still current?
            st.one_of(st.none(), st.sampled_from(["1.0.0", "1.1.0"])),  # previous version
        ),
        max_size=10,
    )
)
def test_abort_always_restores(data: list[tuple[bool, str | None]]) -> None:
    """Model the device-level assignments; after abort's plan, every device whose rollout
    assignment was still in place is back on its previous one, and no other is touched."""
    written, current, before = [], {}, {}
    for i, (still_ours, prev) in enumerate(data):
        d = f"d{i}"
        ours = 100 + i
        written.append(m.Written(d, ours, None if prev is None else ("app", prev)))
        current[d] = ours if still_ours else 500 + i
        before[d] = prev
    assignments: dict[str, str | None] = {
        d: "ours" if current[d] < 500 else "operator's" for d in current
    }
    for r in m.restores(written, current):
        assignments[r.device_id] = None if r.previous is None else r.previous[1]
    for i, (still_ours, prev) in enumerate(data):
        d = f"d{i}"
        assert assignments[d] == (prev if still_ours else "operator's")
