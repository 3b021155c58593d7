"""Pure logic of the live Fleet table: device rows, their cells, the filter, sorting and the
diff that lets the widget touch only the cells that changed.

No Textual and no I/O. Rows come from ``devices.list`` (summary view: ``running``,
``deployment``, ``containers``, ``rollout``, ``metrics``) or, from a hub without that view,
from ``devices.get`` documents (``reported``); both shapes are read here. Times are passed in
(``now``) so ages are testable and snapshots stable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tui.errors import UsageError
from tui.models import common as model

# (column key, header). Keys are stable: the widget addresses cells by them.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("device", "Device"),
    ("status", "Status"),
    ("seen", "Seen"),  # age since the last heartbeat (k9s' AGE)
    ("tags", "Tags"),
    ("groups", "Groups"),
    ("bundle", "Bundle (running → desired)"),
    ("rollout", "Rollout"),
    ("data", "Data"),  # a metered link: the share of its daily budget used in the last 24 h
    ("cpu", "CPU%"),
    ("mem", "Mem%"),
    ("disk", "Disk%"),
)
COLUMN_KEYS = tuple(k for k, _ in COLUMNS)
METRICS = ("cpu", "mem", "disk")
STATES = ("online", "offline", "updating", "failed", "unknown", "decommissioned")
# The text carries the state, so a monochrome terminal (NO_COLOR) loses nothing.
GLYPH = {
    "online": "●",
    "offline": "○",
    "updating": "↻",
    "failed": "✖",
    "unknown": "?",
    "decommissioned": "-",
}
# Style names the widget maps to colours (kept abstract so this stays free of Textual).
STATE_STYLE = {"online": "ok", "updating": "warn", "failed": "bad", "offline": "dim"}
SPARK = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 6  # the hub's 12 five-minute buckets, two per character


@dataclass(frozen=True)
class DeviceRow:
    id: str
    hostname: str
    status: str  # the hub's: online, offline, unknown, decommissioned
    state: str  # one of STATES: the hub's status refined by updating / failed
    last_seen: float | None
    tags: tuple[str, ...]
    groups: tuple[str, ...]
    desired: str | None
    running: str | None
    rollout: str | None  # the device's state in its rollout (Pending, Updating, ...)
    problem: str | None
    metrics: Mapping[str, tuple[float | None, tuple[float | None, ...]]] = field(
        default_factory=dict
    )
    # The device defers its new revision (an update lock, or outside its maintenance
    # windows): "locked" or "window until 02:00", shown after the bundle; None: nothing waits.
    deferred: str | None = None
    # A metered link (``metered`` in either shape: the budget the device says it runs under,
    # in bytes a day, and the bytes its link carried in the last 24 h); None: not metered.
    budget: int | None = None
    bytes_day: int | None = None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _metrics(doc: Any) -> dict[str, tuple[float | None, tuple[float | None, ...]]]:
    out: dict[str, tuple[float | None, tuple[float | None, ...]]] = {}
    if not isinstance(doc, Mapping):
        return out
    for name in METRICS:
        m = doc.get(name)
        if isinstance(m, Mapping):
            spark = m.get("spark")
            points = tuple(_number(x) for x in spark) if isinstance(spark, list) else ()
            out[name] = (_number(m.get("last")), points)
    return out


def _summary_problem(doc: Mapping[str, Any]) -> str | None:
    dep = doc.get("deployment")
    boxes = doc.get("containers")
    if isinstance(dep, Mapping) and dep.get("status") in ("failed", "rolled_back"):
        healthy_after = (
            isinstance(boxes, Mapping)
            and isinstance(boxes.get("total"), int)
            and boxes["total"] > 0
            and model.recovered(
                str(dep["status"]), dep.get("as_of"), boxes.get("as_of"), boxes.get("bad", 1)
            )
        )
        if not healthy_after:
            return f"deployment {dep['status']}: {dep.get('error')}"
    if isinstance(boxes, Mapping) and isinstance(boxes.get("bad"), int) and boxes["bad"] > 0:
        return f"{boxes['bad']} of {boxes.get('total')} containers unhealthy or stopped"
    return None


def device_row(doc: Mapping[str, Any]) -> DeviceRow:
    """One device from either shape of document (summary view, or ``devices.get``)."""
    status = str(doc.get("status") or "unknown")
    desired = model.desired_ref(doc)
    if "running" in doc:  # the summary view
        running = _str(doc.get("running"))
        problem = _summary_problem(doc)
        dep = doc.get("deployment")
        applying = isinstance(dep, Mapping) and dep.get("status") == "applying"
        if running is None and problem is None and isinstance(dep, Mapping):
            running = _str(dep.get("bundle_ref"))  # a failed deployment that recovered
    else:
        reported = doc.get("reported")
        running = model.running_ref(reported)
        problem = model.problem(reported)
        if problem is None and model.health(reported) == "unhealthy":
            problem = "a container is unhealthy or stopped"
        applying = False
    rollout = doc.get("rollout")
    if status != "online":
        state = status if status in STATES else "unknown"
    elif problem is not None:
        state = "failed"
    elif applying or (desired is not None and desired != running):
        state = "updating"  # online and not yet running what it should
    else:
        state = "online"
    return DeviceRow(
        id=str(doc.get("id")),
        hostname=str(doc.get("hostname") or ""),
        status=status,
        state=state,
        last_seen=model.parse_ts(doc.get("last_seen")),
        tags=tuple(str(t) for t in doc.get("tags") or ()),
        groups=tuple(str(g) for g in doc.get("groups") or ()),
        desired=desired,
        running=running,
        rollout=_str(rollout.get("state")) if isinstance(rollout, Mapping) else None,
        problem=problem,
        metrics=_metrics(doc.get("metrics")),
        deferred=deferred_text(doc.get("gate")),
        **_metered(doc.get("metered")),
    )


def _metered(doc: Any) -> dict[str, int | None]:
    """The budget and bytes used of ``metered`` (``devices.get`` adds the hub's
    ``budget_set``: what the device does not run under yet is not its budget here)."""
    if not isinstance(doc, Mapping):
        return {}
    budget, used = _number(doc.get("budget")), _number(doc.get("bytes_day"))
    return {
        "budget": int(budget) if budget is not None and budget > 0 else None,
        "bytes_day": int(used) if used is not None else None,
    }


def deferred_text(gate: Any) -> str | None:
    """``locked by anna`` or ``window until 12-05 02:00`` from the hub's ``gate`` field."""
    if not isinstance(gate, Mapping):
        return None
    if gate.get("kind") == "window":
        until = _str(gate.get("until"))
        return f"window until {until[5:16].replace('T', ' ')}" if until else "outside window"
    locks = gate.get("locks")
    if isinstance(locks, list) and locks and isinstance(locks[0], Mapping):
        more = f" +{len(locks) - 1}" if len(locks) > 1 else ""
        return f"locked by {locks[0].get('who')}{more}"
    return "locked"


# --- cells -------------------------------------------------------------------------------
# A cell is (text, style name or ""): plain data the widget turns into Rich Text, and what
# the diff compares.
Cell = tuple[str, str]


def failing(row: DeviceRow) -> bool:
    """The device's last report shows a failure, whether or not it is online now: an offline
    device keeps the problem it went away with (``status:failed`` and the count find it)."""
    return row.problem is not None and row.status in ("online", "offline")


def status_text(row: DeviceRow, now: float) -> str:
    text = f"{GLYPH.get(row.state, '?')} {row.state}"
    if row.state == "offline" and row.last_seen is not None:
        text += f" {model.age(now - row.last_seen)}"
    if row.state == "offline" and failing(row):
        text += f" {GLYPH['failed']}"  # presence first, the failure still marked
    return text


def bundle_text(desired: str | None, running: str | None) -> str:
    """What runs, and where it is going when that differs (``app@1.2.0 → 1.3.0``)."""
    if desired is None or desired == running:
        return running or "-"
    if running is None:
        return f"- → {desired}"
    name, _, version = desired.partition("@")
    if running.partition("@")[0] == name and version:
        return f"{running} → {version}"
    return f"{running} → {desired}"


def sparkline(points: Sequence[float | None], width: int = SPARK_WIDTH) -> str:
    """Percent values (0-100) as block characters, oldest first; a gap is a space.

    ``points`` is squeezed to ``width`` characters by taking the highest of each group, so
    a short spike still shows.
    """
    if not points:
        return ""
    group = max(1, -(-len(points) // width))
    top = len(SPARK) - 1
    out = []
    # Plain loops: this runs for three cells of every row of a 5,000-device first paint.
    for i in range(0, len(points), group):
        best: float | None = None
        for p in points[i : i + group]:
            if p is not None and (best is None or p > best):
                best = p
        if best is None:
            out.append(" ")
        else:
            level = min(max(best, 0.0), 100.0) / 100.0
            out.append(SPARK[min(top, int(level * len(SPARK)))])
    return "".join(out)


def metric_text(value: tuple[float | None, tuple[float | None, ...]] | None) -> str:
    if value is None:
        return "-"
    last, points = value
    number = f"{last:3.0f}" if last is not None else "  -"
    return f"{sparkline(points)} {number}".strip()


def data_cell(row: DeviceRow) -> Cell:
    """The Data column: ``41%`` of the daily budget used in the last 24 h, ``130% over``
    past it (red, and said in words for a monochrome terminal), ``?`` before the device
    measured any, ``-`` when its link is not metered."""
    if row.budget is None:
        return ("-", "")
    if row.bytes_day is None:
        return ("?", "dim")
    share = f"{100 * row.bytes_day / row.budget:.0f}%"
    if row.bytes_day > row.budget:
        return (f"{share} over", "bad")
    return (share, "")


def seen_text(last_seen: float | None, now: float) -> str:
    """The Seen (age) column: coarse, so a heartbeat every few seconds does not redraw it:
    ``<1m``, ``4m``, ``2h``, ``3d``, or ``never``."""
    if last_seen is None:
        return "never"
    if now - last_seen < 60:
        return "<1m"
    return model.age(now - last_seen)


SEEN = COLUMN_KEYS.index("seen")


def cells(row: DeviceRow, now: float) -> tuple[Cell, ...]:
    """The row's cells in COLUMNS order."""
    marked = row.desired is not None and row.desired != row.running
    return (
        (row.id, ""),
        (status_text(row, now), STATE_STYLE.get(row.state, "")),
        (seen_text(row.last_seen, now), "dim" if row.state == "offline" else ""),
        (",".join(row.tags) or "-", ""),
        (",".join(row.groups) or "-", ""),
        (
            bundle_text(row.desired, row.running) + (f" ⏸ {row.deferred}" if row.deferred else ""),
            "warn" if marked or row.deferred else "",
        ),
        (row.rollout or "-", "bad" if row.rollout == "Failed" else ""),
        data_cell(row),
        *((metric_text(row.metrics.get(m)), "") for m in METRICS),
    )


def changed_columns(old: Sequence[Cell], new: Sequence[Cell]) -> list[int]:
    """Indexes of the cells that differ: all the widget redraws for an update."""
    return [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]


# --- sorting -----------------------------------------------------------------------------
_STATE_ORDER = {s: i for i, s in enumerate(("failed", "updating", "offline", "online"))}


def sort_key(row: DeviceRow, column: str) -> tuple[Any, ...]:
    """A key for ``column``; ties (and missing values, last) fall back to the device id."""
    if column == "status":
        return (_STATE_ORDER.get(row.state, 9), -(row.last_seen or 0.0), row.id)
    if column in METRICS:
        last = row.metrics.get(column, (None, ()))[0]
        return (last is None, -(last or 0.0), row.id)  # busiest first
    if column == "tags":
        return (not row.tags, row.tags, row.id)
    if column == "groups":
        return (not row.groups, row.groups, row.id)
    if column == "bundle":
        ref = row.running or row.desired
        return (ref is None, ref or "", row.id)
    if column == "rollout":
        return (row.rollout is None, row.rollout or "", row.id)
    if column == "data":  # the most of its budget used first; unmetered last
        share = None if row.budget is None else (row.bytes_day or 0) / row.budget
        return (share is None, -(share or 0.0), row.id)
    if column == "seen":
        return (row.last_seen is None, -(row.last_seen or 0.0), row.id)  # most recent first
    return (row.id,)


@dataclass(frozen=True)
class Sort:
    column: str = "device"
    reverse: bool = False

    def next_column(self) -> Sort:
        i = COLUMN_KEYS.index(self.column) if self.column in COLUMN_KEYS else -1
        return Sort(COLUMN_KEYS[(i + 1) % len(COLUMN_KEYS)], False)

    def by(self, column: str) -> Sort:
        """Clicking a header: sort by it, or flip the order when it is already the sort."""
        return Sort(column, not self.reverse) if column == self.column else Sort(column, False)

    def label(self) -> str:
        header = dict(COLUMNS).get(self.column, self.column).split(" (")[0]
        return f"{header} {'▼' if self.reverse else '▲'}"


def ordered(rows: Iterable[DeviceRow], sort: Sort) -> list[DeviceRow]:
    return sorted(rows, key=lambda r: sort_key(r, sort.column), reverse=sort.reverse)


# --- filter ------------------------------------------------------------------------------
class FilterError(UsageError, ValueError):
    """A typed Fleet filter that does not parse."""


FILTER_KEYS = ("tag", "group", "status", "bundle")


@dataclass(frozen=True)
class Term:
    key: str  # tag, group, status, bundle, or "" for free text
    value: str
    negated: bool = False

    def matches(self, row: DeviceRow) -> bool:
        if self.key == "tag":
            hit = self.value in row.tags
        elif self.key == "group":
            hit = self.value in row.groups
        elif self.key == "status":
            # online also keeps the updating and failed devices: they are online too.
            # failed keeps offline devices whose last report failed: going away does not
            # fix them.
            hit = (
                row.state == self.value
                or (self.value == "online" and row.status == "online")
                or (self.value == "failed" and failing(row))
            )
        elif self.key == "bundle":
            hit = any(
                ref is not None and (ref == self.value or ref.partition("@")[0] == self.value)
                for ref in (row.running, row.desired)
            )
        else:
            needle = self.value.lower()
            hit = needle in row.id.lower() or needle in row.hostname.lower()
        return hit != self.negated


@dataclass(frozen=True)
class DeviceFilter:
    """Words ANDed together: ``tag:lab group:north status:offline bundle:app text``, each
    negated by a leading ``!`` (``!tag:lab``)."""

    terms: tuple[Term, ...] = ()

    def keeps(self, row: DeviceRow) -> bool:
        return all(t.matches(row) for t in self.terms)

    @property
    def wants_decommissioned(self) -> bool:
        """Retired devices are loaded only when the filter asks for them."""
        return any(t == Term("status", "decommissioned") for t in self.terms)

    def text(self) -> str:
        words = []
        for t in self.terms:
            word = f"{t.key}:{t.value}" if t.key else t.value
            words.append(f"!{word}" if t.negated else word)
        return " ".join(words)


def parse_filter(text: str) -> DeviceFilter:
    terms = []
    for word in text.split():
        negated = word.startswith("!")
        if negated:
            word = word[1:]
            if not word:
                raise FilterError("! needs a word after it, e.g. !tag:lab")
        key, sep, value = word.partition(":")
        if sep and key in FILTER_KEYS:
            if not value:
                raise FilterError(f"{key}: needs a value, e.g. {key}:lab")
            if key == "status" and value not in STATES:
                raise FilterError(f"unknown status {value!r} (known: {', '.join(STATES)})")
            terms.append(Term(key, value, negated))
        else:
            terms.append(Term("", word, negated))
    return DeviceFilter(tuple(terms))


# --- summary -----------------------------------------------------------------------------
def summarize(rows: Iterable[DeviceRow]) -> dict[str, int]:
    """Counts for the summary bar. Online includes updating and failed devices (online);
    failed also counts offline devices whose last report failed (as ``status:failed``)."""
    counts = dict.fromkeys(("total", "online", "offline", "updating", "failed"), 0)
    for r in rows:
        tally(counts, r)
    return counts


def tally(counts: dict[str, int], r: DeviceRow, sign: int = 1) -> None:
    """Add one row to ``counts`` (or take it away with ``sign=-1``): the table keeps its
    counts up to date per row instead of recounting thousands per update."""
    counts["total"] += sign
    if r.status in ("online", "offline"):
        counts[r.status] += sign
    if r.state == "updating":
        counts["updating"] += sign
    elif failing(r):
        counts["failed"] += sign


def summary_text(counts: Mapping[str, int], loaded: int, sort: Sort, more: bool = False) -> str:
    shown = f"{counts['total']} devices"
    if counts["total"] != loaded:
        shown = f"{counts['total']} of {loaded} devices"
    text = (
        f"{shown}{'+' if more else ''} │ online {counts['online']} │ "
        f"offline {counts['offline']} │ updating {counts['updating']} │ "
        f"failed {counts['failed']} │ sort {sort.label()}"
    )
    return text


# --- change notices ----------------------------------------------------------------------
def notice_ids(doc: Mapping[str, Any]) -> list[str] | None:
    """The device ids a change notice names, or None when it may touch any device.

    ``devices`` (``id``, or ``ids``/``devices`` lists; ``ids: null`` means many), ``reported``
    and ``desired`` (``devices``), ``groups`` member changes (``device``, ``members``).
    """
    kind = doc.get("kind")
    if kind not in ("devices", "reported", "desired", "groups"):
        return None
    if "ids" in doc and doc["ids"] is None:
        return None
    found: list[str] = []
    for key in ("id", "device"):
        if isinstance(doc.get(key), str):
            found.append(doc[key])
    for key in ("ids", "devices", "members"):
        value = doc.get(key)
        if isinstance(value, list):
            found.extend(v for v in value if isinstance(v, str))
    if kind == "groups" and not found:
        return [] if doc.get("action") == "created" else None
    return list(dict.fromkeys(found)) if found else None


# --- marked rows -------------------------------------------------------------------------
MARK = "◆"
SAMPLE = 3


def marked_cell(device_id: str) -> Cell:
    """The Device cell of a marked row: the mark is text too (monochrome terminals)."""
    return (f"{device_id} {MARK}", "mark")


def cell_device_id(text: str) -> str:
    """The device id from a Device cell's text, marked or not (ids have no spaces)."""
    return text.split(" ", 1)[0]


def fleet_question(action: str, ids: Sequence[str]) -> str:
    """The counted confirmation for an action on the marked rows (or the highlighted one)."""
    n = len(ids)
    sample = ", ".join(ids[:SAMPLE]) + (", …" if n > SAMPLE else "")
    count = f"{n} device{'s' if n != 1 else ''} ({sample})"
    if action == "force_update":
        return (
            f"Force the assigned version onto {count} now, through their update locks and "
            f"maintenance windows? Type {n} to go on."
        )
    if action == "decommission":
        return (
            f"Decommission — {count}? Their NATS users are revoked; each may enroll again "
            "only with a new token."
        )
    return f"Make them reconcile now — {count}?"
