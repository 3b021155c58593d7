"""The rollout state machine: pure, no I/O, no clock (``now`` is an argument).

Inputs: the rollout (stored status, failure limit, bake time, failures already accepted by
a resume), its phases (size, when each was started and completed, failures a resume
accepted in it) and one ``Target`` per device (its phase, last known state, whether its
desired state was written, whether it is online, and what it reported). Output: a
``Decision`` — every device's new state, the phases' new records, the rollout's new status,
and which phase (if any) to start now.

The controller persists the decision and writes desired state for the phase it names; the
API's pause/resume/abort are the ``pause``/``resume``/``abort`` functions here, so every rule
lives in one place and is table- and property-tested (tests/unit/test_rollout_machine.py).

Rules:
- Phases are numbered from 1, in the order they start. ``--phases 1%,10%,50%,100%`` gives
  the share of the rollout's devices updated by the end of each phase (cumulative); a count
  (``5``) is a number of devices. Devices left after the last step form one more phase, so
  ``--canary 10%`` is the phases ``10%,100%``. A step that adds no device adds no phase.
- A device is Pending until its agent acknowledges the rollout's generation, Updating while
  that deployment is applying, then Succeeded (healthy) or Failed (failed / rolled back,
  with the agent's reason). Failed is final; Succeeded is final too, except while its phase
  bakes (from its completion until the next phase starts): a device that reports a bad
  container then is Failed ("unhealthy while baking").
- A device that acknowledged the generation but defers it (an update lock held, outside its
  maintenance window: the agent's gate) stays Pending with the device's own words,
  "deferred: locked by anna since T" / "deferred: outside maintenance window until T". It
  has not started, so it is neither Updating nor Failed, and never counts against the limit.
  So is one where a field override (``signalbeam-agent apply``) runs instead: "deferred:
  local override B@V in force on the device; ..." — the agent runs the rollout's revision
  again when the override is cleared.
- A phase is complete when every one of its devices is final. The next phase starts when
  the newest started phase is complete and has stayed so for the bake time (no bake after
  the last phase). Offline devices stay Pending, so they hold their phase until they come
  back; so do deferred ones — the phase waits for the lock's release or the window, and the
  running rollout's reason says so ("phase 2 waits for 1 deferred device: pi-07 locked by
  anna since T"), never silently. The operator's ways on: ``device force-update`` (through
  the lock), or abort. A device decommissioned mid-rollout fails ("device decommissioned").
- A bake is a claim that the phase stayed healthy for the bake time, so it needs evidence:
  the next phase starts only once every Succeeded device of the baked phase was heard from
  (its last heartbeat: ``heard_at``) after the bake ended. A metered device with a slow
  heartbeat, or one whose link dropped, keeps the phase baking (its containers still
  watched) and the rollout's reason says whom it waits for and since when they were last
  heard ("phase 1 baked; waiting to hear from 1 device after T: pi-07, last heard T0"):
  silence is not health.
- The failure limit (``max_failures``: a count, or a percentage of the devices it applies
  to) holds per phase and overall: more failures than ``allowed_failures(limit, size)`` in
  a phase or in the whole rollout (not counting those a resume accepted) pause the rollout
  with the reason, before any further phase starts. (A count is checked overall only: no
  phase can hold more failures than the whole rollout.)
- Paused: nothing new is written. Resume accepts the failures so far and restarts the bake
  of a completed phase. Abort is final; the caller restores every written device.
- All phases started and every device final: succeeded when none failed, else failed.
- Succeeded, failed and aborted are final for the rollout: nothing changes after.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from sbutil.text import phase_name, plural

PENDING, UPDATING, SUCCEEDED, FAILED = "Pending", "Updating", "Succeeded", "Failed"
DEVICE_STATES = (PENDING, UPDATING, SUCCEEDED, FAILED)
FINAL_DEVICE_STATES = frozenset({SUCCEEDED, FAILED})

RUNNING, PAUSED, DONE, FAILED_ROLLOUT, ABORTED = (
    "running",
    "paused",
    "succeeded",
    "failed",
    "aborted",
)
ROLLOUT_STATES = (RUNNING, PAUSED, DONE, FAILED_ROLLOUT, ABORTED)
ACTIVE = frozenset({RUNNING, PAUSED})
FINAL = frozenset({DONE, FAILED_ROLLOUT, ABORTED})

# A phase as the API shows it (``phase_state``).
PHASE_PENDING, PHASE_RUNNING, PHASE_BAKING, PHASE_DONE = "pending", "running", "baking", "done"

# The agent's deployment statuses (protocol.reported.DEPLOYMENT_STATUSES), as reported.
APPLYING, HEALTHY, DEP_FAILED, ROLLED_BACK = "applying", "healthy", "failed", "rolled_back"

DEFERRED = "deferred: "  # a Pending device's reason when its agent defers the revision

MAX_PHASES = 20
WHOLE = 10_000  # a share in hundredths of a percent: 10 000 is 100 %


class TransitionError(ValueError):
    """An operator action that the rollout's status does not allow (the API's conflict)."""


class SpecError(ValueError):
    """A phases or failure-limit text that does not parse (the API's invalid)."""


# --- shares: "10%" or "5" ---------------------------------------------------------------
@dataclass(frozen=True)
class Share:
    """A number of devices (``count``) or a share of them in hundredths of a percent
    (``basis``: 250 is 2.5 %), kept exact so every caller rounds alike."""

    count: int | None = None
    basis: int | None = None

    def __str__(self) -> str:
        if self.basis is None:
            return str(self.count or 0)
        whole, frac = divmod(self.basis, 100)
        return f"{whole}%" if not frac else f"{whole}.{frac:02d}".rstrip("0") + "%"

    @property
    def is_percent(self) -> bool:
        return self.basis is not None


_SHARE_RE = re.compile(r"(\d{1,9})(?:\.(\d{1,2}))?(%?)")


def parse_share(text: str | int, what: str = "value") -> Share:
    """``"2%"``, ``"2.5%"`` (at most two decimals) or ``"2"`` / ``2`` (a count)."""
    if isinstance(text, bool):
        raise SpecError(f"{what} must be a count like 2 or a percentage like 2%")
    if isinstance(text, int):
        if text < 0:
            raise SpecError(f"{what} must not be negative")
        return Share(count=text)
    m = _SHARE_RE.fullmatch(text.strip())
    if not m or (m.group(2) and not m.group(3)):
        raise SpecError(f"{what} {text!r} is not a count like 2 or a percentage like 2%")
    if not m.group(3):
        return Share(count=int(m.group(1)))
    basis = int(m.group(1)) * 100 + int((m.group(2) or "0").ljust(2, "0"))
    if basis > WHOLE:
        raise SpecError(f"{what} {text!r} is over 100%")
    return Share(basis=basis)


def allowed_failures(limit: Share, size: int) -> int:
    """Failures tolerated among ``size`` devices: the count itself, or ``floor(size * p)``
    for a percentage. The one place this is computed: the machine pauses on it and the API
    shows it (per phase and overall), so the CLI and the TUI never round on their own."""
    if limit.basis is None:
        return limit.count or 0
    return size * limit.basis // WHOLE


def parse_phases(spec: str | Sequence[str | int]) -> tuple[Share, ...]:
    """``"1%,10%,50%,100%"`` (or a list): cumulative steps, percentages in (0, 100] and
    counts of at least 1, each kind increasing."""
    parts = [p for p in spec.split(",")] if isinstance(spec, str) else list(spec)
    if not parts or any(isinstance(p, str) and not p.strip() for p in parts):
        raise SpecError("phases must be steps like 1%,10%,50%,100% or 5,50,100%")
    if len(parts) > MAX_PHASES:
        raise SpecError(f"phases: at most {MAX_PHASES} steps")
    steps = tuple(parse_share(p, "phase") for p in parts)
    last: dict[bool, int] = {}
    for s in steps:
        value = s.basis if s.basis is not None else (s.count or 0)
        if value <= 0:
            raise SpecError(f"phase {s} adds no device; steps are more than 0")
        if value <= last.get(s.is_percent, 0):
            raise SpecError(f"phases must grow: {s} after {_shown(last, s.is_percent)}")
        last[s.is_percent] = value
    return steps


def _shown(last: dict[bool, int], percent: bool) -> str:
    v = last[percent]
    return str(Share(basis=v)) if percent else str(v)


def canary_phases(canary_percent: int) -> tuple[Share, ...]:
    """The old ``--canary P%``: the phases ``P%,100%`` (one phase for 0 or 100)."""
    if canary_percent <= 0 or canary_percent >= 100:
        return (Share(basis=WHOLE),)
    return (Share(basis=canary_percent * 100), Share(basis=WHOLE))


def _reach(step: Share, total: int) -> int:
    """Devices updated by the end of ``step``: ``ceil(total * p)`` (at least one) or the
    count, never more than ``total``."""
    if step.basis is None:
        return min(total, step.count or 0)
    return min(total, max(1, -(-total * step.basis // WHOLE)))


def canary_size(total: int, canary_percent: int) -> int:
    """Devices in the first phase of ``--canary P%``: ``ceil(total * P / 100)``, at least one
    when a canary is asked for; 0 or 100 percent means one phase of everything."""
    sizes = phase_sizes(total, canary_phases(canary_percent))
    return sizes[0] if sizes else 0


def phase_sizes(total: int, steps: Sequence[Share]) -> list[int]:
    """Devices per phase, in order: empty phases dropped, the rest as one more phase."""
    sizes: list[int] = []
    done = 0
    for s in steps:
        reach = max(done, _reach(s, total))
        if reach > done:
            sizes.append(reach - done)
            done = reach
    if done < total:
        sizes.append(total - done)
    return sizes


def plan_phases(
    device_ids: Sequence[str], steps: Sequence[Share], online: Collection[str] = ()
) -> dict[str, int]:
    """Phase number (from 1) per device. Online devices go first, since an early phase that
    cannot receive the update tells nothing; ties by device id, so a plan is reproducible."""
    ordered = sorted(set(device_ids), key=lambda d: (d not in online, d))
    out: dict[str, int] = {}
    i = 0
    for number, size in enumerate(phase_sizes(len(ordered), steps), start=1):
        for d in ordered[i : i + size]:
            out[d] = number
        i += size
    return out


# --- inputs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Observation:
    """What the device said about this rollout: the generation it acknowledged (None: not
    yet), that generation's deployment status and reason (None: not reported yet), and —
    read only while its phase bakes — a problem its newest container snapshot shows."""

    generation: int | None = None
    status: str | None = None
    reason: str | None = None
    unhealthy: str | None = None
    # The agent's gate defers that generation: its words ("locked by anna since T",
    # "outside maintenance window until T"). Only meaningful while no verdict came.
    deferred: str | None = None


@dataclass(frozen=True)
class Target:
    device_id: str
    phase: int  # from 1
    state: str = PENDING
    reason: str = ""
    written: bool = False  # its phase started: the device's desired state names the rollout
    online: bool = True
    observation: Observation = Observation()
    decommissioned: bool = False  # retired mid-rollout: it will never report again
    # When the hub last heard from the device (epoch seconds: its last heartbeat).
    # inf: the caller does not know, and the bake never waits on it.
    heard_at: float = float("inf")


@dataclass(frozen=True)
class Phase:
    number: int  # from 1
    size: int
    started_at: float | None = None  # its devices' desired state was written
    completed_at: float | None = None  # every device final: its bake started
    failures_accepted: int = 0  # failures in it a resume accepted


@dataclass(frozen=True)
class Rollout:
    status: str = RUNNING
    max_failures: Share = Share(count=0)
    failures_accepted: int = 0  # failures a resume accepted; only newer ones count
    reason: str = ""
    bake: float = 0.0  # seconds a completed phase must stay healthy before the next starts


@dataclass(frozen=True)
class Decision:
    status: str
    reason: str
    targets: tuple[Target, ...]
    start_phase: int | None  # write desired state for this phase's devices now
    changed: tuple[str, ...]  # devices whose state or reason changed
    phases: tuple[Phase, ...] = ()


def phases_of(targets: Sequence[Target]) -> tuple[Phase, ...]:
    """Phase records as a fresh plan has them (sizes from the targets)."""
    sizes: dict[int, int] = {}
    for t in targets:
        sizes[t.phase] = sizes.get(t.phase, 0) + 1
    return tuple(Phase(n, sizes[n]) for n in sorted(sizes))


# --- one device --------------------------------------------------------------------------
def device_state(t: Target, baking: bool = False) -> tuple[str, str]:
    """(state, reason) for one device from its last state and its observation; ``baking``:
    its phase is in its bake time, when a Succeeded device can still fail."""
    obs = t.observation
    if t.state == SUCCEEDED and baking and obs.unhealthy:
        return FAILED, f"unhealthy while baking: {obs.unhealthy}"
    if t.state in FINAL_DEVICE_STATES:
        return t.state, t.reason  # final: a later report cannot reopen it
    if t.decommissioned:
        # Not a success (it never ran the version), and without this it would hold its phase
        # Pending forever.
        return FAILED, "device decommissioned"
    if not t.written:
        return PENDING, f"waiting for {phase_name(t.phase)}"
    if obs.generation is None:
        if not t.online:
            return PENDING, "device offline; it updates when it comes back"
        return PENDING, "desired state written; waiting for the device"
    if obs.status in (None, APPLYING) and obs.deferred:
        # Acknowledged but held by the site: its lock or window, or a field override running
        # instead (an offline device's last word stays, as for an acknowledged one).
        return PENDING, DEFERRED + obs.deferred
    if obs.status == HEALTHY:
        return SUCCEEDED, ""
    if obs.status in (DEP_FAILED, ROLLED_BACK):
        why = obs.reason or "no reason given"
        word = "rolled back" if obs.status == ROLLED_BACK else "failed"
        return FAILED, f"{word}: {why}"
    return UPDATING, f"applying generation {obs.generation}"


# --- the rollout -------------------------------------------------------------------------
def failures(targets: Sequence[Target], phase: int | None = None) -> int:
    return sum(1 for t in targets if t.state == FAILED and (phase is None or t.phase == phase))


def deferred(t: Target) -> bool:
    """Pending because the device defers the revision (its lock or window)."""
    return t.state == PENDING and t.reason.startswith(DEFERRED)


def waiting(targets: Sequence[Target], current: int) -> str:
    """What a running phase waits for that only the site can end: its deferred devices,
    the first named with the device's reason ("" when none)."""
    held = sorted(
        (t for t in targets if t.phase <= current and deferred(t)), key=lambda t: t.device_id
    )
    if not held:
        return ""
    first = held[0]
    more = f" (and {len(held) - 1} more)" if len(held) > 1 else ""
    return (
        f"{phase_name(current)} waits for {plural(len(held), 'deferred device')}:"
        f" {first.device_id} {first.reason.removeprefix(DEFERRED)}{more}"
    )


def counts(targets: Sequence[Target]) -> dict[str, int]:
    out = dict.fromkeys(DEVICE_STATES, 0)
    for t in targets:
        out[t.state] += 1
    return out


def phase_state(
    phase: Phase,
    phases: Sequence[Phase],
    started: Collection[int],
    bake: float,
    now: float,
    unheard: int = 0,
) -> str:
    """pending (not started), running (devices not all final), baking (complete, the bake
    time not over — or over with ``unheard`` devices not heard from since — and the next
    phase not started), done."""
    if phase.number not in started:
        return PHASE_PENDING
    if phase.completed_at is None:
        return PHASE_RUNNING
    later = [p.number for p in phases if p.number > phase.number]
    if not later or any(n in started for n in later):
        return PHASE_DONE
    if now >= phase.completed_at + bake and not (bake > 0 and unheard):
        return PHASE_DONE
    return PHASE_BAKING


def watched_phases(plan: Sequence[Phase], targets: Sequence[Target]) -> set[int]:
    """Phases whose Succeeded devices can still fail ("unhealthy while baking"): complete,
    with a later phase not started yet. That is the bake, and past its time too until the
    next phase starts — the evidence awaited after the bake (``unheard``) may arrive with a
    bad container snapshot, which must count before the next phase is written."""
    started = {t.phase for t in targets if t.written}
    return {
        p.number
        for p in plan
        if p.completed_at is not None
        and p.number in started
        and any(q.number > p.number for q in plan)
        and not any(q.number > p.number and q.number in started for q in plan)
    }


def unheard(targets: Sequence[Target], phase: Phase, bake: float) -> list[Target]:
    """Succeeded devices of a completed phase not heard from since its bake ended: no
    evidence yet that they stayed healthy through it (none without a bake)."""
    if phase.completed_at is None or bake <= 0:
        return []
    end = phase.completed_at + bake
    return [
        t for t in targets if t.phase == phase.number and t.state == SUCCEEDED and t.heard_at < end
    ]


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _unheard_reason(quiet: Sequence[Target], phase: Phase, bake: float) -> str:
    first = min(quiet, key=lambda t: t.device_id)
    end = (phase.completed_at or 0.0) + bake
    last = "never" if first.heard_at <= 0 else _stamp(first.heard_at)
    more = f" (and {len(quiet) - 1} more)" if len(quiet) > 1 else ""
    return (
        f"{phase_name(phase.number)} baked; waiting to hear from"
        f" {plural(len(quiet), 'device')} after {_stamp(end)}: {first.device_id}, last"
        f" heard {last}{more}"
    )


def bake_left(phase: Phase, bake: float, now: float) -> float:
    """Seconds of bake still to go for a completed phase (0 when over or not completed)."""
    if phase.completed_at is None:
        return 0.0
    return max(0.0, phase.completed_at + bake - now)


def over_limit(rollout: Rollout, targets: Sequence[Target], phases: Sequence[Phase]) -> str | None:
    """Why the failures cross the limit (overall first, then per phase), or None."""
    limit = rollout.max_failures
    failed = failures(targets)
    total = len(targets)
    allowed = allowed_failures(limit, total)
    if failed - rollout.failures_accepted > allowed:
        return (
            f"{plural(failed, 'device')} failed, more than max-failures {_limit_text(limit, allowed, total)}"
            + (f" after {rollout.failures_accepted} accepted" if rollout.failures_accepted else "")
        )
    if not limit.is_percent:
        return None  # a count: no phase can hold more failures than the whole rollout
    for p in phases:
        here = failures(targets, p.number)
        allowed = allowed_failures(limit, p.size)
        if here - p.failures_accepted > allowed:
            return (
                f"{phase_name(p.number)} of {len(phases)}: {here} of {plural(p.size, 'device')}"
                f" failed, more than max-failures {_limit_text(limit, allowed, p.size)}"
                + (f" after {p.failures_accepted} accepted" if p.failures_accepted else "")
            )
    return None


def _limit_text(limit: Share, allowed: int, size: int) -> str:
    return str(limit) if not limit.is_percent else f"{limit} ({allowed} of {size})"


def step(
    rollout: Rollout,
    targets: Sequence[Target],
    phases: Sequence[Phase] | None = None,
    now: float = 0.0,
) -> Decision:
    """One evaluation: new device states and phase records, the rollout's status, and the
    phase to start (if any). ``phases`` default to the targets' own (no times yet)."""
    plan = tuple(phases) if phases is not None else phases_of(targets)
    if rollout.status in FINAL:
        return Decision(rollout.status, rollout.reason, tuple(targets), None, (), plan)
    started = {t.phase for t in targets if t.written}
    baking = watched_phases(plan, targets) if rollout.bake > 0 else set()
    updated: list[Target] = []
    changed: list[str] = []
    for t in targets:
        state, reason = device_state(t, t.phase in baking)
        if (state, reason) != (t.state, t.reason):
            changed.append(t.device_id)
            t = replace(t, state=state, reason=reason)
        updated.append(t)
    out = tuple(updated)
    status, reason = rollout.status, rollout.reason
    if status == RUNNING:
        why = over_limit(rollout, out, plan)
        if why is not None:
            status, reason = PAUSED, why + "; resume to go on anyway, or abort"

    def decide(
        status: str, reason: str, start: int | None = None, new_plan: tuple[Phase, ...] = plan
    ) -> Decision:
        return Decision(status, reason, out, start, tuple(changed), new_plan)

    if status != RUNNING:
        return decide(status, reason)
    if not plan:
        return decide(DONE, "no devices to update")
    if not started:
        first = plan[0].number
        return decide(RUNNING, "", first, _mark(plan, first, started_at=now))
    current = max(started)
    if any(t.state not in FINAL_DEVICE_STATES for t in out if t.phase <= current):
        return decide(RUNNING, waiting(out, current))
    phase = next(p for p in plan if p.number == current)
    if phase.completed_at is None:
        phase = replace(phase, completed_at=now)
        plan = _mark(plan, current, completed_at=now)
    later = [p.number for p in plan if p.number > current]
    if later:
        done_at = now if phase.completed_at is None else phase.completed_at  # 0.0 is a time
        if now < done_at + rollout.bake:
            return decide(RUNNING, "", None, plan)
        quiet = unheard(out, phase, rollout.bake)
        if quiet:  # silence is not health: wait for word from each after the bake
            return decide(RUNNING, _unheard_reason(quiet, phase, rollout.bake), None, plan)
        return decide(RUNNING, "", later[0], _mark(plan, later[0], started_at=now))
    failed = failures(out)
    if failed:
        return decide(
            FAILED_ROLLOUT, f"{failed} of {plural(len(out), 'device')} failed", None, plan
        )
    return decide(DONE, "", None, plan)


def _mark(
    plan: tuple[Phase, ...],
    number: int,
    started_at: float | None = None,
    completed_at: float | None = None,
) -> tuple[Phase, ...]:
    """``plan`` with phase ``number`` started or completed at the given time."""
    out = []
    for p in plan:
        if p.number == number and started_at is not None:
            p = replace(p, started_at=started_at)
        if p.number == number and completed_at is not None:
            p = replace(p, completed_at=completed_at)
        out.append(p)
    return tuple(out)


# --- operator actions --------------------------------------------------------------------
def pause(rollout: Rollout) -> Rollout:
    if rollout.status != RUNNING:
        raise TransitionError(f"only a running rollout can be paused; this one is {rollout.status}")
    return replace(rollout, status=PAUSED, reason="paused by an operator")


def resume(rollout: Rollout, targets: Sequence[Target]) -> Rollout:
    """Go on; the failures so far are accepted, so only new ones count against the limit."""
    if rollout.status != PAUSED:
        raise TransitionError(f"only a paused rollout can be resumed; this one is {rollout.status}")
    return replace(rollout, status=RUNNING, reason="", failures_accepted=failures(targets))


def resume_phases(phases: Sequence[Phase], targets: Sequence[Target]) -> tuple[Phase, ...]:
    """The phases after a resume: each accepts its failures so far, and the newest started
    phase bakes again from the moment it is seen complete (it must stay healthy for a whole
    bake time after the operator's decision)."""
    started = {t.phase for t in targets if t.written}
    current = max(started, default=None)
    return tuple(
        replace(
            p,
            failures_accepted=failures(targets, p.number),
            completed_at=None if p.number == current else p.completed_at,
        )
        for p in phases
    )


def abort(rollout: Rollout) -> Rollout:
    """Stop for good; the caller restores the devices' previous assignments (``restores``)."""
    if rollout.status in (DONE, ABORTED):
        raise TransitionError(f"a rollout that {rollout.status} cannot be aborted")
    return replace(rollout, status=ABORTED, reason="aborted by an operator")


@dataclass(frozen=True)
class Written:
    """A device whose desired state the rollout wrote: the device-level assignment it made
    (``ours``) and the device-level assignment it replaced (``previous``, None for none)."""

    device_id: str
    ours: int | None
    previous: tuple[str, str] | None  # (bundle, version)


@dataclass(frozen=True)
class Restore:
    device_id: str
    previous: tuple[str, str] | None  # assign this back, or None: remove the device assignment


def restores(written: Sequence[Written], current: dict[str, int | None]) -> list[Restore]:
    """What abort must do: give back each device's previous device-level assignment, but
    only where the rollout's own assignment is still in place — an operator who assigned the
    device since then made a newer decision that abort must not undo."""
    out = []
    for w in written:
        if w.ours is not None and current.get(w.device_id) == w.ours:
            out.append(Restore(w.device_id, w.previous))
    return out
