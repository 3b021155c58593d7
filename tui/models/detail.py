"""Pure view logic for the drill-down screens: device detail (metrics windows, containers,
describe text, events, log search and live tail), state colours and the metered line. The
reconcile journal and stuck reasons live in ``tui.models.journal``; confirmation texts, the
rollout request and read-only rules in ``tui.models.confirm``.

No Textual and no I/O here, so every rule is unit-tested directly. Readers tolerate missing
or unexpected fields: a reported state document is whatever the device last sent (read through
``protocol.reported.ReportedState``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from protocol.metered import format_budget, format_bytes
from tui.models import common as model
from tui.models.journal import stuck_reasons

# --- metrics windows -----------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    key: str  # what the operator sees: 1h, 24h, 7d
    seconds: int
    resolution: str  # the hub's rollup table: 1m or 1h


# 24 h of 1-minute rows for a dozen metrics would pass the hub's 10 000-row cap (it would
# cut the names sorted last), so the longer windows read the hourly rollups.
WINDOWS = (Window("1h", 3600, "1m"), Window("24h", 86400, "1h"), Window("7d", 7 * 86400, "1h"))


def next_window(key: str) -> Window:
    keys = [w.key for w in WINDOWS]
    return WINDOWS[(keys.index(key) + 1) % len(WINDOWS)] if key in keys else WINDOWS[0]


def window(key: str) -> Window:
    return next((w for w in WINDOWS if w.key == key), WINDOWS[0])


def metrics_request(device_id: str, win: Window, now: float) -> dict[str, Any]:
    return {"device": device_id, "resolution": win.resolution, "since": int(now) - win.seconds}


def metric_series(items: Iterable[Any]) -> dict[str, list[float]]:
    """``metrics.get`` rows as one series of averages per metric name, oldest first."""
    rows = [r for r in items if isinstance(r, Mapping) and r.get("name") is not None]
    rows.sort(key=lambda r: (str(r["name"]), float(r.get("ts") or 0)))
    out: dict[str, list[float]] = {}
    for r in rows:
        value = r.get("avg")
        out.setdefault(str(r["name"]), []).append(
            float(value) if isinstance(value, int | float) else 0.0
        )
    return out


def metric_label(name: str, values: Sequence[float]) -> str:
    if not values:
        return f"{name}  no data"
    return f"{name}  last {values[-1]:.1f}  min {min(values):.1f}  max {max(values):.1f}"


# --- containers ----------------------------------------------------------------------------
CONTAINER_COLUMNS = ("Container", "Service", "State", "Health", "Restarts", "CPU%", "Mem", "Image")
# The agent samples each running container (engine stats) into its minute rollups as
# ``container.<service>.cpu_percent`` / ``.memory_bytes``; the hub keeps them with the host
# metrics (``metrics.get``).
CONTAINER_METRIC = "container."


def human_bytes(n: float) -> str:
    """1536 -> ``1.5 KiB``; binary units, as the engines report memory."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def container_usage(series: Mapping[str, Sequence[float]]) -> dict[str, tuple[str, str]]:
    """Per service, the newest minute's CPU% and memory as text, from ``metric_series``."""
    out: dict[str, list[str]] = {}
    for name, values in series.items():
        if not name.startswith(CONTAINER_METRIC) or not values:
            continue
        service, _, what = name[len(CONTAINER_METRIC) :].rpartition(".")
        cell = out.setdefault(service, ["-", "-"])
        if what == "cpu_percent":
            cell[0] = f"{values[-1]:.1f}"
        elif what == "memory_bytes":
            cell[1] = human_bytes(values[-1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def container_rows(
    reported: Any, usage: Mapping[str, tuple[str, str]] | None = None
) -> list[tuple[str, ...]]:
    """The Containers tab; CPU% / Mem are the newest minute the hub has for the service
    ("-" before the first one arrives)."""
    rows: list[tuple[str, ...]] = []
    for c in model.containers(reported):
        restarts = c.get("restarts", c.get("restart_count"))
        name, service = str(c.get("name") or "?"), str(c.get("service") or "-")
        cpu, mem = (usage or {}).get(service, (usage or {}).get(name, ("-", "-")))
        rows.append(
            (
                name,
                service,
                str(c.get("state") or "-"),
                str(c.get("health") or "-"),
                str(restarts) if isinstance(restarts, int) else "-",
                cpu,
                mem,
                str(c.get("image") or "-"),
            )
        )
    return rows


def host_first(names: Iterable[str]) -> list[str]:
    """Metric names for the Overview's sparklines: the host's first, then per container."""
    return sorted(names, key=lambda n: (n.startswith(CONTAINER_METRIC), n))


def describe_lines(device: Mapping[str, Any], now: float) -> list[str]:
    """``d`` on a fleet row (kubectl describe): the device's record in readable lines, from
    ``devices.get``."""
    reported = device.get("reported")
    desired = device.get("desired") or {}
    hb = device.get("heartbeat") or {}
    lines = [
        f"Device:      {device.get('id')}",
        f"Status:      {device.get('status')} (last seen {model.ago(device.get('last_seen'), now)})",
        f"Host:        {device.get('hostname') or '-'} ({device.get('os') or '-'}/"
        f"{device.get('arch') or '-'}, engine {device.get('engine') or '-'}, "
        f"agent {device.get('agent_version') or '-'})",
        f"Tenant:      {device.get('tenant') or '-'}",
        f"Tags:        {', '.join(device.get('tags') or []) or '-'}",
        f"Groups:      {', '.join(device.get('groups') or []) or '-'}",
        f"Desired:     {model.desired_ref(device) or 'nothing'}"
        + (f" (via {desired.get('via')})" if desired.get("via") else "")
        + (
            f", generation {device.get('desired_generation')}"
            if device.get("desired_generation") is not None
            else ""
        ),
    ]
    if reported is None:
        lines.append("Reported:    nothing yet (the device has not synced)")
    else:
        lines += [
            f"Running:     {model.running_ref(reported) or 'nothing'}",
            f"Health:      {model.health(reported)}",
            f"Reported:    {model.ago(reported.get('as_of'), now)} ({reported.get('as_of')})",
        ]
        why = model.problem(reported)
        if why is not None:
            lines.append(f"Problem:     {why}")
    gate = device.get("gate")
    if isinstance(gate, Mapping):
        lines.append(
            f"Update:      {gate.get('bundle_ref') or 'new revision'} deferred: "
            f"{gate.get('reason') or '-'}"
        )
    windows = device.get("maintenance_windows")
    if windows is not None:
        lines.append(f"Windows:     {', '.join(windows) or 'any time'} (set at the hub)")
    lines += value_lines(device)
    metered = device.get("metered")
    if isinstance(metered, Mapping):
        lines.append(f"Data:        {metered_line(metered)}")
    if device.get("sync_behind") is not None:
        lines.append(f"Sync behind: {device.get('sync_behind')} report row(s)")
    if hb:
        lines.append(f"Heartbeat:   {model.ago(hb.get('received_at') or hb.get('as_of'), now)}")
    boxes = container_rows(reported)
    lines.append("")
    lines.append("Containers:" if boxes else "Containers:  none reported")
    lines += [f"  {r[0]}  {r[2]}  health {r[3]}  restarts {r[4]}  {r[7]}" for r in boxes]
    stuck = stuck_reasons(device, now)
    if stuck:
        lines += ["", "Not converging:", *(f"  {w}" for w in stuck)]
    return lines


@dataclass(frozen=True)
class Value:
    """One variable or secret that reaches a device (``devices.get``'s ``variables`` and
    ``secrets``): a secret by its fingerprint only, the hub never sends its value."""

    kind: str  # var | secret
    name: str
    shown: str  # the value, or a secret's fingerprint
    source: str  # fleet, group:NAME or device:ID (docs/bundles.md's precedence)
    shadows: tuple[str, ...]  # the sources it wins over

    @property
    def origin(self) -> str:
        """``from group:north, over fleet``."""
        over = f", over {', '.join(self.shadows)}" if self.shadows else ""
        return f"from {self.source}{over}"


def device_values(device: Mapping[str, Any]) -> list[Value]:
    """What the describe text, the device screen and ``device show`` list, in that order:
    the variables, then the secrets."""
    out = []
    for key, kind, shown in (("variables", "var", "value"), ("secrets", "secret", "fingerprint")):
        for item in device.get(key) or ():
            if isinstance(item, Mapping):
                shadows = item.get("shadows")
                out.append(
                    Value(
                        kind,
                        str(item.get("name")),
                        str(item.get(shown)),
                        str(item.get("source")),
                        tuple(str(s) for s in shadows) if isinstance(shadows, list) else (),
                    )
                )
    return out


def value_lines(device: Mapping[str, Any]) -> list[str]:
    """The describe text's lines of the variables and secrets that reach the device."""
    labels = {"var": "Variable:", "secret": "Secret:"}
    return [f"{labels[v.kind]:12} {v.name} = {v.shown} ({v.origin})" for v in device_values(device)]


def setting_lines(device: Mapping[str, Any]) -> list[str]:
    """The device screen's lines of the same: ``var SITE = north (from group:north)``."""
    return [f"{v.kind} {v.name} = {v.shown} ({v.origin})" for v in device_values(device)]


def gate_lines(device: Mapping[str, Any]) -> list[str]:
    """The device screen's lines about update gates: a deferral, the windows set at the hub."""
    out = []
    gate = device.get("gate")
    if isinstance(gate, Mapping):
        out.append(
            f"update {gate.get('bundle_ref') or 'new revision'} deferred: {gate.get('reason')}"
        )
    windows = device.get("maintenance_windows")
    if windows is not None:
        out.append(f"maintenance windows {', '.join(windows) or 'any time'} (set at the hub)")
    metered = device.get("metered")
    if isinstance(metered, Mapping):
        out.append(f"data {metered_line(metered)}")
    return out


def yaml_docs(device: Mapping[str, Any]) -> dict[str, Any]:
    """``y`` on a fleet row: what the hub wants the device to run and what it reports, as
    the documents the hub keeps (shown as YAML)."""
    return {
        "device": device.get("id"),
        "desired": device.get("desired"),
        "desired_generation": device.get("desired_generation"),
        "reported": device.get("reported"),
    }


def describe_text(
    device_id: str, device: Mapping[str, Any], as_yaml: bool, now: float
) -> tuple[str, str]:
    """The title and body of the Fleet's ``d`` (describe) or ``y`` (YAML) text screen."""
    if as_yaml:
        # Imported here: the CLI's output module imports this one for its plain lines, and
        # `signalbeam --help` must load no YAML parser (the per-verb import budget).
        import yaml

        body = yaml.safe_dump(yaml_docs(device), sort_keys=False, allow_unicode=True)
        return f"{device_id}: desired and reported (YAML) · Esc closes", body
    return f"describe {device_id} · Esc closes", "\n".join(describe_lines(device, now))


def container_names(reported: Any) -> list[str]:
    """What the Logs picker offers: the bundle's service names (stable across upgrades; the
    engine names carry spec and device hashes, and the agent's logs command takes either),
    else the engine name."""
    out: list[str] = []
    for c in model.containers(reported):
        name = c.get("service") or c.get("name")
        if name and str(name) not in out:
            out.append(str(name))
    return out


# --- events --------------------------------------------------------------------------------
def event_row(e: Mapping[str, Any]) -> tuple[str, str, str]:
    ts = str(e.get("ts", ""))[:19].replace("T", " ")
    return ts, str(e.get("kind") or "-"), str(e.get("message") or "")


# --- logs ----------------------------------------------------------------------------------
MAX_LOG_LINES = 2000  # kept in the view; older ones scroll away


def merge_tail(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """Append a fresh tail to what is shown without repeating the overlap.

    The remote ``logs`` command only returns the last N lines, so a live tail re-polls; the
    longest suffix of ``old`` that is a prefix of ``new`` is the overlap. With no overlap
    (the log rolled past a whole tail between polls) the new tail is appended whole.
    """
    longest = min(len(old), len(new))
    for size in range(longest, 0, -1):
        if list(old[-size:]) == list(new[:size]):
            merged = list(old) + list(new[size:])
            break
    else:
        merged = list(old) + list(new)
    return merged[-MAX_LOG_LINES:]


def search_lines(lines: Sequence[str], query: str) -> list[str]:
    """Case-insensitive substring search; an empty query keeps every line."""
    q = query.strip().lower()
    return list(lines) if not q else [line for line in lines if q in line.lower()]


# --- state colours -------------------------------------------------------------------------
STATE_STYLES = {
    "online": "green",
    "succeeded": "green",
    "healthy": "green",
    "running": "green",
    "offline": "bright_black",
    "unknown": "bright_black",
    "decommissioned": "bright_black",
    "pending": "bright_black",
    "updating": "yellow",
    "applying": "yellow",
    "starting": "yellow",
    "paused": "yellow",
    "failed": "red",
    "rolled_back": "red",
    "unhealthy": "red",
    "exited": "red",
    "aborted": "red",
}


def styled(state: str) -> Text:
    """A state word for a table cell, coloured (Rich text: tables size columns by it)."""
    return Text(state, style=state_style(state))


def state_style(state: str) -> str:
    """A colour for a state word. The word itself is always shown too, so a monochrome
    terminal (Textual drops colours under NO_COLOR) loses nothing."""
    return STATE_STYLES.get(state.lower(), "")


def metered_line(m: Mapping[str, Any]) -> str:
    """``41.2KB in 24 h of 100KB/day`` from ``devices.get``'s or the summary's ``metered``:
    the device's own word (its last full heartbeat), and the hub's budget when the device
    does not run under it yet."""
    own, hub = m.get("budget"), m.get("budget_set")
    used = m.get("bytes_day")
    head = "not measured yet" if used is None else f"{format_bytes(used)} in 24 h"
    if own is None and hub is None:
        return head + " (not metered)"
    if own is None:
        return f"{head}; hub set {format_budget(hub)}, not applied yet"
    over = " OVER BUDGET" if m.get("over") else ""
    pending = (
        "" if hub is None or hub == own else f" (hub set {format_budget(hub)}, not applied yet)"
    )
    return f"{head} of {format_budget(own)}{over}{pending}"
