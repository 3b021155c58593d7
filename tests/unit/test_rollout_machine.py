"""The rollout state machine (hub/rollouts/machine.py): tables of single steps, then
hypothesis driving whole rollouts through random reports and operator actions."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.rollouts import machine as m
from hub.rollouts.machine import Observation, Rollout, Target

OK = Observation(7, "healthy")
APPLYING = Observation(7, "applying")
ACKED = Observation(7)
BAD = Observation(7, "rolled_back", "relay unhealthy for 60s")
BROKEN = Observation(7, "failed", "pull failed")


# --- one device --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "want"),
    [
        (Target("d", 1), (m.PENDING, "waiting for wave 2")),
        (
            Target("d", 0, written=True),
            (m.PENDING, "desired state written; waiting for the device"),
        ),
        (
            Target("d", 0, written=True, online=False),
            (m.PENDING, "device offline; it updates when it comes back"),
        ),
        (Target("d", 0, written=True, observation=ACKED), (m.UPDATING, "applying generation 7")),
        (Target("d", 0, written=True, observation=APPLYING), (m.UPDATING, "applying generation 7")),
        (Target("d", 0, written=True, observation=OK), (m.SUCCEEDED, "")),
        (
            Target("d", 0, written=True, observation=BAD),
            (m.FAILED, "rolled back: relay unhealthy for 60s"),
        ),
        (Target("d", 0, written=True, observation=BROKEN), (m.FAILED, "failed: pull failed")),
        (
            Target("d", 0, written=True, observation=Observation(7, "failed")),
            (m.FAILED, "failed: no reason given"),
        ),
        # a device retired mid-rollout will never report: it fails rather than hold its wave
        (Target("d", 1, decommissioned=True), (m.FAILED, "device decommissioned")),
        (Target("d", 0, m.SUCCEEDED, "", True, decommissioned=True), (m.SUCCEEDED, "")),
        # final states stick, whatever comes later
        (Target("d", 0, m.SUCCEEDED, "", True, observation=BAD), (m.SUCCEEDED, "")),
        (Target("d", 0, m.FAILED, "failed: x", True, observation=OK), (m.FAILED, "failed: x")),
        # an offline device that already acknowledged keeps its progress
        (
            Target("d", 0, written=True, online=False, observation=APPLYING),
            (m.UPDATING, "applying generation 7"),
        ),
    ],
)
def test_device_state(target: Target, want: tuple[str, str]) -> None:
    assert m.device_state(target) == want


# --- waves -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("total", "percent", "want"),
    [(0, 10, 0), (10, 0, 10), (10, 100, 10), (10, 10, 1), (10, 15, 2), (3, 10, 1), (1, 50, 1),
     (200, 1, 2), (7, 99, 7)],
)  # fmt: skip
def test_canary_size(total: int, percent: int, want: int) -> None:
    assert m.canary_size(total, percent) == want


def test_canary_prefers_online_devices() -> None:
    waves = m.plan_waves(["a", "b", "c", "d"], 50, online={"c", "d"})
    assert waves == {"c": 0, "d": 0, "a": 1, "b": 1}
    assert m.plan_waves(["a", "b"], 0) == {"a": 0, "b": 0}


# --- one step of a rollout ---------------------------------------------------------------
def fleet(*states: tuple[int, str, bool]) -> list[Target]:
    """(wave, state, written) per device d0, d1, ..."""
    return [Target(f"d{i}", w, s, "", written) for i, (w, s, written) in enumerate(states)]


@pytest.mark.parametrize(
    ("rollout", "targets", "status", "start_wave"),
    [
        # nothing written yet: start the canary
        (Rollout(), fleet((0, m.PENDING, False), (1, m.PENDING, False)), m.RUNNING, 0),
        # canary still updating: wait
        (Rollout(), fleet((0, m.UPDATING, True), (1, m.PENDING, False)), m.RUNNING, None),
        # canary succeeded: the rest
        (Rollout(), fleet((0, m.SUCCEEDED, True), (1, m.PENDING, False)), m.RUNNING, 1),
        # canary failed beyond the threshold (0): paused, nothing more starts
        (Rollout(), fleet((0, m.FAILED, True), (1, m.PENDING, False)), m.PAUSED, None),
        # one failure tolerated: go on
        (Rollout(max_failures=1), fleet((0, m.FAILED, True), (1, m.PENDING, False)), m.RUNNING, 1),
        # all done, none failed
        (Rollout(), fleet((0, m.SUCCEEDED, True), (1, m.SUCCEEDED, True)), m.DONE, None),
        # all done within the threshold, some failed
        (
            Rollout(max_failures=1),
            fleet((0, m.SUCCEEDED, True), (1, m.FAILED, True)),
            m.FAILED_ROLLOUT,
            None,
        ),
        # failures a resume accepted do not count again
        (
            Rollout(failures_accepted=1),
            fleet((0, m.FAILED, True), (1, m.PENDING, False)),
            m.RUNNING,
            1,
        ),
        # paused by an operator: devices still progress, no wave starts
        (Rollout(m.PAUSED), fleet((0, m.SUCCEEDED, True), (1, m.PENDING, False)), m.PAUSED, None),
        # final rollouts never change
        (Rollout(m.ABORTED), fleet((0, m.PENDING, False)), m.ABORTED, None),
        (Rollout(m.DONE), fleet((0, m.SUCCEEDED, True)), m.DONE, None),
        # an empty rollout has nothing to do
        (Rollout(), [], m.DONE, None),
    ],
)
def test_step(rollout: Rollout, targets: list[Target], status: str, start_wave: int | None) -> None:
    d = m.step(rollout, targets)
    assert (d.status, d.start_wave) == (status, start_wave)


def test_pause_reason_names_the_threshold() -> None:
    d = m.step(Rollout(max_failures=1), fleet(*[(0, m.FAILED, True)] * 2))
    assert d.status == m.PAUSED
    assert "2 devices failed, more than max-failures 1" in d.reason


def test_step_reports_which_devices_changed() -> None:
    targets = [
        Target("a", 0, written=True, observation=OK),
        Target("b", 0, written=True, reason="desired state written; waiting for the device"),
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
            return m.resume(r, fleet((0, m.FAILED, True)))
        return m.abort(r)

    if allowed:
        want = {"pause": m.PAUSED, "resume": m.RUNNING, "abort": m.ABORTED}[action]
        assert act().status == want
    else:
        with pytest.raises(m.TransitionError):
            act()


def test_resume_accepts_the_failures_so_far() -> None:
    r = m.resume(Rollout(m.PAUSED, reason="x"), fleet((0, m.FAILED, True), (0, m.FAILED, True)))
    assert (r.status, r.failures_accepted, r.reason) == (m.RUNNING, 2, "")


def test_restores_only_where_the_rollouts_assignment_is_still_current() -> None:
    written = [
        m.Written("a", 10, None),
        m.Written("b", 11, ("app", "1.0.0")),
        m.Written("c", 12, ("app", "1.0.0")),  # an operator re-assigned it since
    ]
    plan = m.restores(written, {"a": 10, "b": 11, "c": 99})
    assert plan == [m.Restore("a", None), m.Restore("b", ("app", "1.0.0"))]


# --- whole rollouts under random events --------------------------------------------------
EVENTS = st.lists(
    st.one_of(
        st.tuples(
            st.just("report"),
            st.integers(0, 7),
            st.sampled_from([None, "applying", "healthy", "failed", "rolled_back"]),
        ),
        st.tuples(st.just("online"), st.integers(0, 7), st.booleans()),
        st.tuples(st.just("decommission"), st.integers(0, 7), st.just(None)),
        st.tuples(st.sampled_from(["pause", "resume", "abort"]), st.just(0), st.just(None)),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(
    n=st.integers(1, 8),
    canary=st.integers(0, 100),
    max_failures=st.integers(0, 3),
    events=EVENTS,
)
def test_random_rollouts_keep_the_rules(
    n: int, canary: int, max_failures: int, events: list[tuple[str, int, str | None]]
) -> None:
    waves = m.plan_waves([f"d{i}" for i in range(n)], canary)
    targets = [Target(d, w) for d, w in sorted(waves.items())]
    rollout = Rollout(max_failures=max_failures)
    ever_final: dict[str, str] = {}

    def apply(d: m.Decision) -> list[Target]:
        out = list(d.targets)
        if d.start_wave is not None:
            assert d.status == m.RUNNING
            # a wave starts only when every device of the waves before it is final
            assert all(t.state in m.FINAL_DEVICE_STATES for t in out if t.wave < d.start_wave)
            assert not any(t.written for t in out if t.wave >= d.start_wave)
            out = [replace(t, written=True) if t.wave == d.start_wave else t for t in out]
        return out

    for kind, i, value in events:
        if kind == "report" and i < n and targets[i].written:
            gen = None if value is None else 7
            targets[i] = replace(targets[i], observation=Observation(gen, value, "why"))
        elif kind == "online" and i < n:
            targets[i] = replace(targets[i], online=bool(value))
        elif kind == "decommission" and i < n:
            targets[i] = replace(targets[i], decommissioned=True)
        elif kind in ("pause", "resume", "abort"):
            try:
                if kind == "pause":
                    rollout = m.pause(rollout)
                elif kind == "resume":
                    rollout = m.resume(rollout, targets)
                else:
                    rollout = m.abort(rollout)
            except m.TransitionError:
                pass
        before_written = sum(t.written for t in targets)
        d = m.step(rollout, targets)
        if rollout.status in m.FINAL:
            assert d.status == rollout.status and d.start_wave is None
        targets = apply(d)
        if d.status != m.RUNNING:
            assert sum(t.written for t in targets) == before_written  # nothing new written
        rollout = replace(rollout, status=d.status, reason=d.reason)
        failed = m.failures(targets)
        # never more failures than the threshold while running
        if rollout.status == m.RUNNING:
            assert failed - rollout.failures_accepted <= max_failures
        # succeeded only when every device succeeded
        if rollout.status == m.DONE:
            assert all(t.state == m.SUCCEEDED for t in targets)
        if rollout.status == m.FAILED_ROLLOUT:
            assert all(t.state in m.FINAL_DEVICE_STATES for t in targets) and failed
        # only written devices move past Pending; final device states stick
        for t in targets:
            if not t.written and not t.decommissioned:
                assert t.state == m.PENDING
            if t.device_id in ever_final:
                assert t.state == ever_final[t.device_id]
            elif t.state in m.FINAL_DEVICE_STATES:
                ever_final[t.device_id] = t.state
        assert sum(m.counts(targets).values()) == n


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
