"""The CLI's text output: tables, aligned fields, human sizes and ages, ``-o json|yaml``.

Pure formatting (no I/O beyond the stream it is given, no clock unless none is passed), so
unit tests pin the wording. Text output is for people: timestamps read as ages ("5m ago",
kubectl's style), byte counts as sizes ("76.4 GiB"), percentages with a sign. ``wide`` keeps
the raw timestamps and adds columns; JSON and YAML carry the API's values untouched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from protocol.reported import ReportedState
from tui.models.detail import device_values, metered_line

FORMATS = ("text", "wide", "json", "yaml")
# Fields that hold a moment (ISO 8601 from the hub, unix seconds in metrics).
TIME_FIELDS = frozenset(
    {
        "ts",
        "last_seen",
        "created_at",
        "expires_at",
        "enrolled_at",
        "as_of",
        "started_at",
        "finished_at",
        "updated_at",
        "revoked_at",
    }
)

# A time column shown as an age gets a header that says so (wide shows the times as sent).
AGE_HEADERS = {"ts": "age", "created_at": "created", "expires_at": "expires"}


# --- values ------------------------------------------------------------------------------
def human_duration(seconds: float) -> str:
    """kubectl's rounding: precise while short, coarser as it grows ("45s", "4m10s", "3h",
    "2d5h", "40d")."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 730:
        return f"{d}d"
    return f"{d // 365}y"


def epoch(value: Any) -> float | None:
    """Unix seconds from an ISO 8601 string or a number; None if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if stamp.tzinfo is None:
            return None  # a moment without a zone cannot be placed; shown as it is
        return stamp.timestamp()
    return None


def age(value: Any, now: float | None = None) -> str:
    """ "5m ago", "in 23h" (an expiry), "-" for none; the value itself if it is no time."""
    if value is None or value == "":
        return "-"
    t = epoch(value)
    if t is None:
        return str(value)
    delta = (time.time() if now is None else now) - t
    if -1 < delta < 1:
        return "now"
    return f"{human_duration(delta)} ago" if delta > 0 else f"in {human_duration(-delta)}"


def human_bytes(n: float) -> str:
    """IEC sizes: "512 B", "1.5 KiB", "76.4 GiB"."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def number(value: float) -> str:
    """A float without a noisy tail: 2.0 -> "2", 0.12345 -> "0.123"."""
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def metric_value(name: str, value: Any) -> str:
    """A metric's reading in its unit, from the name (``*_bytes``, ``*percent``)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return cell(value)
    if name.endswith("bytes"):
        return human_bytes(value)
    if name.endswith("percent"):
        return f"{value:.1f}%"
    return number(value)


def cell(value: Any, key: str = "", *, wide: bool = False, now: float | None = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in TIME_FIELDS and not wide:
        return age(value, now)
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return number(value)
    return str(value)


# --- blocks ------------------------------------------------------------------------------
def table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    out: TextIO,
    *,
    wide: bool = False,
    now: float | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Aligned columns with upper-case headers; "(none)" for no rows."""
    if not rows:
        print("(none)", file=out)
        return
    names = [(headers or {}).get(c) or (c if wide else AGE_HEADERS.get(c, c)) for c in columns]
    names = [n.upper() for n in names]
    cells = [[cell(r.get(c), c, wide=wide, now=now) for c in columns] for r in rows]
    widths = [max(len(n), *(len(row[i]) for row in cells)) for i, n in enumerate(names)]
    print("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip(), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


def fields(
    doc: dict[str, Any] | Sequence[tuple[str, Any]],
    out: TextIO,
    skip: Sequence[str] = (),
    *,
    wide: bool = False,
    now: float | None = None,
) -> None:
    """``key  value`` lines, the values aligned."""
    items = [(k, v) for k, v in (doc.items() if isinstance(doc, dict) else doc) if k not in skip]
    width = max((len(k) for k, _ in items), default=0)
    for key, value in items:
        text = value if isinstance(value, Text) else cell(value, key, wide=wide, now=now)
        print(f"{key.ljust(width)}  {text}".rstrip(), file=out)


class Text(str):
    """A value already formatted for ``fields`` (printed as it is)."""


def structured(result: Any, fmt: str, out: TextIO) -> None:
    """``-o json`` (the API's object, indented) or ``-o yaml``."""
    if fmt == "yaml":
        import yaml  # only for -o yaml: most commands never load it

        yaml.safe_dump(result, out, sort_keys=True, default_flow_style=False, allow_unicode=True)
    else:
        print(json.dumps(result, indent=2, sort_keys=True, default=str), file=out)


# --- devices -----------------------------------------------------------------------------
def show_device(
    d: dict[str, Any], out: TextIO, *, wide: bool = False, now: float | None = None
) -> None:
    """``device show``: the facts, then what it should run, what it runs, its containers."""
    seen = d.get("last_seen")
    status = str(d.get("status") or "-")
    if seen:
        status += f" (last seen {cell(seen, 'last_seen', wide=wide, now=now)})"
    platform = "/".join(str(d[k]) for k in ("os", "arch") if d.get(k)) or "-"
    rows: list[tuple[str, Any]] = [
        ("id", d.get("id")),
        ("hostname", d.get("hostname")),
        ("status", Text(status)),
        ("tenant", d.get("tenant")),
        ("platform", Text(platform)),
        ("engine", d.get("engine")),
        ("agent", d.get("agent_version")),
        ("enrolled", Text(cell(d.get("enrolled_at"), "enrolled_at", wide=wide, now=now))),
        ("tags", d.get("tags")),
        ("groups", d.get("groups")),
    ]
    if d.get("decommissioned"):
        rows.append(("decommissioned", True))
    desired = d.get("desired")
    rows.append(
        (
            "desired",
            Text(f"{desired['bundle']}@{desired['version']} (via {desired['via']})")
            if isinstance(desired, dict)
            else Text("nothing assigned"),
        )
    )
    reported = d.get("reported")
    state = ReportedState()
    if isinstance(reported, dict):
        state = ReportedState.read(reported.get("state"))
        running = state.running.bundle_ref if state.running is not None else None
        rows.append(("running", Text(running or "nothing healthy reported")))
        dep = state.deployment
        if dep is not None:
            why = f": {dep.reason}" if dep.reason else ""
            rows.append(("deployment", Text(f"{dep.bundle_ref or '-'} {dep.status or '-'}{why}")))
        rows.append(("reported", Text(cell(reported.get("as_of"), "as_of", wide=wide, now=now))))
    else:
        rows.append(("reported", Text("nothing reported yet")))
    gate = d.get("gate")
    if isinstance(gate, dict):  # the device defers a new revision (lock or window)
        what = gate.get("bundle_ref") or "update"
        rows.append(("update", Text(f"{what} deferred: {gate.get('reason') or '-'}")))
    windows = d.get("maintenance_windows")
    if windows is not None:
        rows.append(("windows", Text(", ".join(windows) or "any time (set at the hub)")))
    # Variables and secrets that reach the device, each with where it comes from; a secret
    # shows only its fingerprint (which value), never the value.
    for v in device_values(d):
        rows.append((f"{v.kind} {v.name}", Text(f"{v.shown}  ({v.origin})")))
    metered = d.get("metered")
    if isinstance(metered, dict):  # a metered link: bytes used in 24 h against the budget
        rows.append(("data", Text(metered_line(metered))))
    if wide:
        for key in ("heartbeat", "sync_behind", "last_applied_seq", "desired_generation"):
            if key in d:
                rows.append((key, d[key]))
    fields(rows, out, wide=wide, now=now)
    boxes = [c for c in state.containers or () if isinstance(c, dict)]
    if boxes:
        print(file=out)
        cols = ["service", "name", "state", "health", "image"]
        if wide:
            cols += ["restart_count", "started_at", "id"]
        table(boxes, cols, out, wide=wide, now=now)


def show_agent_status(
    s: dict[str, Any], out: TextIO, *, wide: bool = False, now: float | None = None
) -> None:
    """``device status``: the agent's own summary (the shape of ``signalbeam-agent status``)."""
    rows: list[tuple[str, Any]] = [("device", s.get("device_id"))]
    d = s.get("desired")
    rows.append(
        (
            "desired",
            Text(
                "none"
                if not isinstance(d, dict)
                else f"generation {d.get('generation')} ({d.get('source')}): "
                f"{d.get('bundle_ref') or 'run no bundle'}"
            ),
        )
    )
    dep = s.get("deployment")
    if isinstance(dep, dict):
        why = f": {dep['reason']}" if dep.get("reason") else ""
        rows.append(
            (
                "deployment",
                Text(
                    f"generation {dep.get('generation')} {dep.get('bundle_ref') or '-'} "
                    f"{dep.get('status')}{why}"
                ),
            )
        )
    run = s.get("last_reconcile")
    if isinstance(run, dict):
        when = cell(run.get("finished_at") or run.get("started_at"), "ts", wide=wide, now=now)
        why = f": {run['reason']}" if run.get("reason") else ""
        rows.append(
            (
                "last run",
                Text(f"#{run.get('run_id')} {run.get('result') or 'unfinished'} {when}{why}"),
            )
        )
    sync = s.get("sync")
    if isinstance(sync, dict):
        link = "online" if sync.get("online") else "offline"
        if sync.get("last_error") and not sync.get("online"):
            link += f" ({sync['last_error']})"
        rows.append(("hub link", Text(f"{link}, mode {sync.get('mode', '-')}")))
    outbox = s.get("outbox")
    if isinstance(outbox, dict):
        rows.append(
            (
                "outbox",
                Text(
                    f"{outbox.get('pending', 0)} row(s) to send "
                    f"({human_bytes(outbox.get('bytes') or 0)})"
                ),
            )
        )
    metrics = s.get("metrics")
    if isinstance(metrics, dict) and metrics:
        shown = ", ".join(
            f"{name} {metric_value(name, v)}"
            for name, v in sorted(metrics.items())
            if wide or not name.startswith("container.")
        )
        rows.append(("metrics", Text(shown)))
    fields(rows, out, wide=wide, now=now)
    boxes = [c for c in s.get("containers") or [] if isinstance(c, dict)]
    print(file=out)
    table(boxes, ["service", "name", "state", "health", "image"], out, wide=wide, now=now)
