"""Pure view logic for the TUI: readers of the hub's device documents, rollout progress.

The Fleet table's rows, filter and sorting are in ``fleet.py`` beside this module.

No Textual and no I/O here, so every rule is unit-tested directly. The hub's device records
come from ``devices.list`` / ``devices.get``; the reported state document is whatever the
device last sent, read through ``protocol.reported.ReportedState``, which tolerates missing
or unexpected fields.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping
from typing import Any

from protocol.reported import BAD_CONTAINER_STATES, ReportedState

ROLLOUT_STATES = ("Pending", "Updating", "Succeeded", "Failed")


def parse_ts(text: Any) -> float | None:
    """The hub's UTC timestamps (``2026-11-26T18:00:00.000Z``) as epoch seconds."""
    if not isinstance(text, str) or len(text) < 19:
        return None
    try:
        base = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    frac = text[19:].rstrip("Z")
    return base + (float(frac) if frac.startswith(".") and frac[1:].isdigit() else 0.0)


def age(seconds: float) -> str:
    """A short human age: 42s, 5m, 3h, 2d (negative clock skew reads as 0s)."""
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def ago(ts: Any, now: float) -> str:
    parsed = parse_ts(ts)
    return "never" if parsed is None else f"{age(now - parsed)} ago"


def reported_state(reported: Any) -> ReportedState | None:
    """The ``state`` of a device's ``reported`` record (``{state, as_of}``), read; None when
    the device has reported nothing yet."""
    state = reported.get("state") if isinstance(reported, Mapping) else None
    return ReportedState.read(state) if isinstance(state, Mapping) else None


def running_ref(reported: Any) -> str | None:
    """``bundle@version`` the device says it runs, from its reported state document."""
    s = reported_state(reported)
    if s is None:
        return None
    ref = s.stated_ref()
    if ref:
        return ref
    dep = s.deployment
    if dep is not None and dep.bundle_ref and problem(reported) is None:
        return dep.bundle_ref  # a failed deployment that recovered runs after all
    return s.flat_ref()


def containers(reported: Any) -> list[dict[str, Any]]:
    """The device's containers: the agent's ``observed`` snapshot as the hub keeps it
    (``state.observed.containers``), or a flat ``state.containers`` list."""
    s = reported_state(reported)
    if s is None or s.containers is None:
        return []
    return [c for c in s.containers if isinstance(c, dict)]


def problem(reported: Any) -> str | None:
    """Why the device is not converging, from its reported state, or None.

    Reads the agent's vocabulary (``deployment.status`` failed/rolled_back with a reason,
    ``last_reconcile.result`` failed) and a plain ``last_result`` string.
    """
    s = reported_state(reported)
    if s is None:
        return None
    dep = s.deployment
    if (
        dep is not None
        and dep.status is not None
        and dep.failed
        and not recovered(dep.status, dep.as_of, s.observed_as_of, containers(reported))
    ):
        return f"{dep.bundle_ref or 'deployment'} {dep.status}: {dep.reason}"
    if s.reconcile is not None and s.reconcile.result == "failed":
        return f"last reconcile failed: {s.reconcile.reason}"
    result = s.last_result
    if result is not None and result.lower() in ("failed", "error", "rolled_back"):
        return f"last reconcile {result.lower()}"
    return None


def recovered(status: str, failed_at: Any, observed_at: Any, boxes: list[Any] | int) -> bool:
    """Whether a failed deployment no longer describes the device: the agent gave the
    generation up (``failed``, nothing to roll back to: it holds and never reports that
    deployment again until the next generation), yet its container snapshot, received
    after the failure, shows containers and every one of them running and not unhealthy.
    Without this the row said "failed" until the next deployment while the device reported
    healthy (a slow start past the health window). A rollback (``rolled_back``) is not
    superseded: the device runs an older version than the one wanted.

    ``boxes``: the snapshot's containers, or its count of bad ones (the summary view).
    """
    if status != "failed" or not isinstance(failed_at, str) or not isinstance(observed_at, str):
        return False
    if observed_at <= failed_at:  # the hub's ISO times, one format: ordered as text
        return False
    if isinstance(boxes, int):
        return boxes == 0
    return bool(boxes) and all(
        c.get("state") == "running" and c.get("health") != "unhealthy" for c in boxes
    )


def health(reported: Any) -> str:
    """One word for the device's apps: healthy, unhealthy, failed, starting, or '-'.

    A failed reconcile or a rollback wins; then any unhealthy or stopped container.
    """
    if reported_state(reported) is None:
        return "-"
    if problem(reported) is not None:
        return "failed"
    boxes = containers(reported)
    if not boxes:
        return "-"
    healths = [str(c.get("health") or "") for c in boxes]
    if "unhealthy" in healths or any(c.get("state") in BAD_CONTAINER_STATES for c in boxes):
        return "unhealthy"
    if "starting" in healths:
        return "starting"
    return "healthy"


def desired_ref(device: Mapping[str, Any]) -> str | None:
    desired = device.get("desired")
    if isinstance(desired, Mapping) and desired.get("bundle"):
        return f"{desired['bundle']}@{desired.get('version')}"
    return None


# --- rollouts ----------------------------------------------------------------------------
def rollout_counts(rollout: Mapping[str, Any]) -> dict[str, int]:
    """Per-state device counts, whatever the case of the hub's keys."""
    raw = rollout.get("counts")
    counts = dict.fromkeys(ROLLOUT_STATES, 0)
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            name = str(key).capitalize()
            if name in counts and isinstance(value, int):
                counts[name] = value
    return counts


def rollout_progress(rollout: Mapping[str, Any]) -> tuple[int, int]:
    """(finished devices, all devices): Succeeded and Failed are both finished."""
    c = rollout_counts(rollout)
    return c["Succeeded"] + c["Failed"], sum(c.values())


def rollout_label(rollout: Mapping[str, Any]) -> tuple[str, str]:
    """Two lines that fit 80 columns: which rollout, and its devices per state (and how many
    of the pending ones their site holds: ``deferred``, docs/rollouts.md)."""
    c = rollout_counts(rollout)
    ref = f"{rollout.get('bundle')}@{rollout.get('version')}"
    title = f"{rollout.get('id')}  {ref}  [{rollout.get('state', '?')}]"
    counts = (
        f"pending {c['Pending']} · updating {c['Updating']} · "
        f"succeeded {c['Succeeded']} · failed {c['Failed']}"
    )
    deferred = rollout.get("deferred")
    if isinstance(deferred, int) and deferred > 0:
        # of the pending: held by their site (an update lock, a window, a field override)
        counts += f" (⏸ {deferred} deferred)"
    return title, counts


def rollout_devices(rollout: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(device, state, reason) rows from ``rollouts.get``; tolerant of the row's key names."""
    rows = rollout.get("devices") or rollout.get("targets") or []
    out = []
    for r in rows if isinstance(rows, list) else []:
        if isinstance(r, Mapping):
            device = r.get("device") or r.get("device_id") or r.get("id") or "?"
            out.append((str(device), str(r.get("state", "?")), str(r.get("reason") or "")))
    return out
