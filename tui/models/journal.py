"""Pure view logic for why a device is where it is: the reconcile journal (what it last
decided) and the stuck reasons (why it is not converging), both read from ``devices.get``.

No Textual and no I/O here, so every rule is unit-tested directly. Readers tolerate missing
or unexpected fields: a reported state document is whatever the device last sent (read through
``protocol.reported.ReportedState``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from protocol.reported import DeploymentPart, container_bad
from sbutil.text import plural
from tui.models import common as model


# --- journal: why the last reconcile did what it did ---------------------------------------
def _ts(value: Any, now: float) -> str:
    """The agent's epoch seconds (or the hub's ISO text) as ``HH:MM:SS UTC (5m ago)``."""
    if isinstance(value, int | float):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value))
        return f"{stamp} UTC ({model.age(now - value)} ago)"
    parsed = model.parse_ts(value)
    if parsed is None:
        return "-"
    return f"{str(value)[:19].replace('T', ' ')} UTC ({model.age(now - parsed)} ago)"


def _or_dash(value: Any) -> Any:
    return "-" if value is None else value


def _steps(n: Any) -> str:
    """ "1 step", "5 steps": the agent's reconcile event words it the same (sbutil.text)."""
    return plural(n, "step") if isinstance(n, int) else "? steps"


def journal_lines(device: Mapping[str, Any], now: float) -> list[str]:
    """What the device last decided and, when it is not converging, why.

    From ``devices.get``: the hub's desired version (and generation), and the reported
    ``desired`` (what the agent has received), ``deployment`` (what it applied, and the
    outcome) and ``reconcile`` (its last run that changed something or failed: trigger,
    result, reason) parts. The agent keeps the full step journal locally
    (``signalbeam-agent status``); only these summaries travel.
    """
    s = model.reported_state(device.get("reported"))
    want = model.desired_ref(device)
    want_gen = device.get("desired_generation")
    gen = f" (generation {want_gen})" if want and want_gen else ""
    lines = [f"hub wants: {want or 'nothing assigned'}{gen}"]
    if s is None:
        lines.append("the device has reported nothing yet: it has not synced since enrolling")
        lines += [f"stuck: {s}" for s in stuck_reasons(device, now)]
        return lines
    got = s.desired
    if got is not None:
        lines.append(
            f"device has: {got.bundle_ref or '-'} (generation {_or_dash(got.generation)}, "
            f"{got.source or 'hub'})"
        )
    dep = s.deployment
    if dep is not None:
        line = f"deployment: {dep.bundle_ref or '-'} {dep.status or '?'}"
        if dep.reason:
            line += f" — {dep.reason}"
        lines.append(line)
        if dep.started_at is not None:
            lines.append(f"  started {_ts(dep.started_at, now)}")
        if dep.finished_at is not None:
            lines.append(f"  finished {_ts(dep.finished_at, now)}")
    run = s.reconcile
    if run is not None:
        line = (
            f"last reconcile: {run.result or 'running'} (trigger {run.trigger or '-'}, "
            f"generation {_or_dash(run.generation)}, {_steps(run.steps)})"
        )
        lines.append(line)
        if run.reason:
            lines.append(f"  reason: {run.reason}")
        if run.finished_at is not None:
            lines.append(f"  at {_ts(run.finished_at, now)}")
    else:
        lines.append("last reconcile: none that changed anything has been reported")
    stuck = stuck_reasons(device, now)
    lines += [f"stuck: {s}" for s in stuck] or ["converged: nothing is holding the device back"]
    return lines


def stuck_reasons(device: Mapping[str, Any], now: float) -> list[str]:
    """Why the device does not run what the hub wants, each as one sentence; [] = fine."""
    out: list[str] = []
    status = str(device.get("status") or "unknown")
    reported = device.get("reported")
    s = model.reported_state(reported)
    want = model.desired_ref(device)
    running = model.running_ref(reported)
    if status != "online" and status != "decommissioned":
        out.append(
            f"the device is {status} (last seen {model.ago(device.get('last_seen'), now)}): "
            "it gets the new desired state when it reconnects"
        )
    if s is None:
        return out
    got = s.desired
    dep = s.deployment or DeploymentPart()
    if want is not None and got is not None and got.bundle_ref not in (None, want):
        out.append(f"the device has not received {want} yet (it has {got.bundle_ref})")
    if dep.failed:
        out.append(
            f"{dep.bundle_ref or 'the deployment'} {dep.status}: {dep.reason or 'no reason given'}"
        )
    elif dep.status == "applying" and want is not None:
        out.append(f"still applying {dep.bundle_ref or want}")
    gate = device.get("gate")
    if isinstance(gate, Mapping):
        # The device waits on purpose: an update lock, or outside its maintenance windows.
        out.append(
            f"{gate.get('bundle_ref') or 'the new revision'} deferred: {gate.get('reason')}"
            " (`signalbeam device force-update` overrides)"
        )
    run = s.reconcile
    if run is not None and run.result == "failed" and not dep.failed:
        out.append(f"last reconcile failed: {run.reason or 'no reason given'}; the agent retries")
    bad = [
        f"{c.get('name')} {c.get('health') if c.get('health') == 'unhealthy' else c.get('state')}"
        for c in model.containers(reported)
        if container_bad(c)
    ]
    if bad:
        out.append("containers not healthy: " + ", ".join(bad))
    sync_behind = device.get("sync_behind")
    if isinstance(sync_behind, int) and sync_behind > 0:
        # The count is as of the device's last heartbeat, not now: say when.
        as_of = device.get("sync_behind_as_of")
        out.append(
            f"the hub has not received {sync_behind} report row(s) the device held"
            + (f" at its heartbeat {model.ago(as_of, now)}" if as_of else "")
        )
    if want is not None and running is not None and want != running and not out:
        out.append(f"runs {running}, not {want} yet")
    return out
