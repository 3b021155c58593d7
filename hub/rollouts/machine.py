"""The rollout state machine: pure, no I/O, no clock.

Inputs: the rollout (stored status, failure threshold, failures already accepted by a
resume) and one ``Target`` per device (its wave, last known state, whether its desired state
was written, whether it is online, and what it reported). Output: a ``Decision`` — every
device's new state, the rollout's new status, and which wave (if any) to start now.

The controller persists the decision and writes desired state for the wave it names; the
API's pause/resume/abort are the ``pause``/``resume``/``abort`` functions here, so every rule
lives in one place and is table- and property-tested (tests/unit/test_rollout_machine.py).

Rules:
- A device is Pending until its agent acknowledges the rollout's generation, Updating while
  that deployment is applying, then Succeeded (healthy) or Failed (failed / rolled back,
  with the agent's reason). Succeeded and Failed are final for the rollout.
- Waves start in order; the next one starts when every device of the started waves is
  final. Offline devices stay Pending, so they hold their wave until they come back; a
  device decommissioned mid-rollout fails ("device decommissioned"): it will never report.
- More failures than ``max_failures`` (not counting those a resume accepted) pause the
  rollout before any further wave starts.
- All waves started and every device final: succeeded when none failed, else failed.
- Succeeded, failed and aborted are final for the rollout: nothing changes after.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from sbutil.text import plural, wave_name

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

# The agent's deployment statuses (agent/store: DEPLOYMENT_STATUSES), as reported.
APPLYING, HEALTHY, DEP_FAILED, ROLLED_BACK = "applying", "healthy", "failed", "rolled_back"


class TransitionError(ValueError):
    """An operator action that the rollout's status does not allow (the API's conflict)."""


@dataclass(frozen=True)
class Observation:
    """What the device said about this rollout: the generation it acknowledged (None: not
    yet) and that generation's deployment status and reason (None: not reported yet)."""

    generation: int | None = None
    status: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Target:
    device_id: str
    wave: int
    state: str = PENDING
    reason: str = ""
    written: bool = False  # its wave started: the device's desired state names the rollout
    online: bool = True
    observation: Observation = Observation()
    decommissioned: bool = False  # retired mid-rollout: it will never report again


@dataclass(frozen=True)
class Rollout:
    status: str = RUNNING
    max_failures: int = 0
    failures_accepted: int = 0  # failures a resume accepted; only newer ones count
    reason: str = ""


@dataclass(frozen=True)
class Decision:
    status: str
    reason: str
    targets: tuple[Target, ...]
    start_wave: int | None  # write desired state for this wave's devices now
    changed: tuple[str, ...]  # devices whose state or reason changed


# --- planning ----------------------------------------------------------------------------
def canary_size(total: int, canary_percent: int) -> int:
    """Devices in the first wave: ``ceil(total * percent / 100)``, at least one when a canary
    is asked for; 0 or 100 percent means one wave of everything."""
    if total <= 0:
        return 0
    if canary_percent <= 0 or canary_percent >= 100:
        return total
    return min(total, max(1, math.ceil(total * canary_percent / 100)))


def plan_waves(
    device_ids: Sequence[str], canary_percent: int, online: Collection[str] = ()
) -> dict[str, int]:
    """Wave per device: the canary (wave 0) prefers online devices, since a canary that
    cannot receive the update tells nothing; the rest is wave 1. Ties go by device id so a
    plan is reproducible."""
    ordered = sorted(set(device_ids), key=lambda d: (d not in online, d))
    size = canary_size(len(ordered), canary_percent)
    return {d: (0 if i < size else 1) for i, d in enumerate(ordered)}


# --- one device --------------------------------------------------------------------------
def device_state(t: Target) -> tuple[str, str]:
    """(state, reason) for one device from its last state and its observation."""
    if t.state in FINAL_DEVICE_STATES:
        return t.state, t.reason  # final: a later report cannot reopen it
    obs = t.observation
    if t.decommissioned:
        # Not a success (it never ran the version), and without this it would hold its wave
        # Pending forever.
        return FAILED, "device decommissioned"
    if not t.written:
        return PENDING, f"waiting for {wave_name(t.wave)}"
    if obs.generation is None:
        if not t.online:
            return PENDING, "device offline; it updates when it comes back"
        return PENDING, "desired state written; waiting for the device"
    if obs.status == HEALTHY:
        return SUCCEEDED, ""
    if obs.status in (DEP_FAILED, ROLLED_BACK):
        why = obs.reason or "no reason given"
        word = "rolled back" if obs.status == ROLLED_BACK else "failed"
        return FAILED, f"{word}: {why}"
    return UPDATING, f"applying generation {obs.generation}"


# --- the rollout -------------------------------------------------------------------------
def failures(targets: Sequence[Target]) -> int:
    return sum(1 for t in targets if t.state == FAILED)


def counts(targets: Sequence[Target]) -> dict[str, int]:
    out = dict.fromkeys(DEVICE_STATES, 0)
    for t in targets:
        out[t.state] += 1
    return out


def _over_threshold(rollout: Rollout, failed: int) -> bool:
    return failed - rollout.failures_accepted > rollout.max_failures


def step(rollout: Rollout, targets: Sequence[Target]) -> Decision:
    """One evaluation: new device states, rollout status, and the wave to start (if any)."""
    if rollout.status in FINAL:
        return Decision(rollout.status, rollout.reason, tuple(targets), None, ())
    updated: list[Target] = []
    changed: list[str] = []
    for t in targets:
        state, reason = device_state(t)
        if (state, reason) != (t.state, t.reason):
            changed.append(t.device_id)
            t = replace(t, state=state, reason=reason)
        updated.append(t)
    out = tuple(updated)
    failed = failures(out)
    status, reason = rollout.status, rollout.reason
    if status == RUNNING and _over_threshold(rollout, failed):
        status = PAUSED
        reason = (
            f"{plural(failed, 'device')} failed, more than max-failures {rollout.max_failures}"
            + (f" after {rollout.failures_accepted} accepted" if rollout.failures_accepted else "")
            + "; resume to go on anyway, or abort"
        )
    if status != RUNNING:
        return Decision(status, reason, out, None, tuple(changed))
    waves = sorted({t.wave for t in out})
    started = sorted({t.wave for t in out if t.written})
    if not waves:
        return Decision(DONE, "no devices to update", out, None, tuple(changed))
    if not started:
        return Decision(RUNNING, "", out, waves[0], tuple(changed))
    current = started[-1]
    if any(t.state not in FINAL_DEVICE_STATES for t in out if t.wave <= current):
        return Decision(RUNNING, "", out, None, tuple(changed))
    later = [w for w in waves if w > current]
    if later:
        return Decision(RUNNING, "", out, later[0], tuple(changed))
    if failed:
        return Decision(
            FAILED_ROLLOUT,
            f"{failed} of {plural(len(out), 'device')} failed",
            out,
            None,
            tuple(changed),
        )
    return Decision(DONE, "", out, None, tuple(changed))


# --- operator actions --------------------------------------------------------------------
def pause(rollout: Rollout) -> Rollout:
    if rollout.status != RUNNING:
        raise TransitionError(f"only a running rollout can be paused; this one is {rollout.status}")
    return replace(rollout, status=PAUSED, reason="paused by an operator")


def resume(rollout: Rollout, targets: Sequence[Target]) -> Rollout:
    """Go on; the failures so far are accepted, so only new ones count against the threshold."""
    if rollout.status != PAUSED:
        raise TransitionError(f"only a paused rollout can be resumed; this one is {rollout.status}")
    return replace(rollout, status=RUNNING, reason="", failures_accepted=failures(targets))


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
