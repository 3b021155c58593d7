"""Maintenance windows: their grammar and the calendar arithmetic, pure (no clock, no I/O).

A window is ``DAYS HH:MM-HH:MM`` in the device's local time zone, for example
``"Sat,Sun 02:00-05:00"``, ``"Mon-Fri 22:30-01:00"`` or ``"* 03:00-04:00"``:

- ``DAYS``: ``*`` (every day), or a comma list of day names (``Mon`` .. ``Sun``, any case)
  and ranges (``Mon-Fri``; ``Fri-Mon`` wraps over the weekend). It names the day a window
  *starts* on.
- ``HH:MM-HH:MM``: start and end, 00:00-23:59; the end may be ``24:00``. An end at or before
  the start means the window crosses midnight and ends the next day. Start and end must
  differ (all day is ``* 00:00-24:00``).

Daylight saving time, decided once here and documented in docs/bundles.md: a window starts
at the *first* occurrence of its start time and ends at the *last* occurrence of its end
time (so a window around a fall-back hour is longer by that hour), and a time that does not
exist (the hour skipped in spring) means the instant the clock jumps to, so a window that
lies wholly inside a skipped hour does not occur that day.

Bundle specs (``update.maintenance_windows``), the hub (per device and group) and the agent
(``agent.reconcile.gates``) all use this one module, so a window means the same everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_WINDOWS = 32
MAX_TEXT = 200
_TIME = re.compile(r"(\d{1,2}):(\d{2})")
_SEARCH_DAYS = 15  # a window occurs at least weekly; two weeks covers skipped-hour days too


class WindowError(ValueError):
    """A window that does not parse; ``field`` names the part at fault (days, start, end,
    window), ``text`` is the window as given."""

    def __init__(self, text: str, field: str, message: str) -> None:
        super().__init__(f"{text!r}: {field}: {message}")
        self.text = text
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday, as date.weekday()
    start: int  # minutes after midnight, 0-1439
    end: int  # minutes after midnight, 0-1440; <= start: ends the next day
    text: str  # as written (normalised spacing), for messages

    @property
    def length(self) -> int:
        """Nominal length in minutes (a DST day can make the real one differ)."""
        return (self.end - self.start) % 1440 or 1440


_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(name: str) -> int:
    """0-6 for ``Mon``, ``monday`` or ``MON``; -1 for anything else (``Mo``, ``Monx``)."""
    n = name.strip().lower()
    if n in DAY_NAMES:
        return DAY_NAMES.index(n)
    return _FULL.index(n) if n in _FULL else -1


def _days(spec: str, text: str) -> frozenset[int]:
    if spec in ("*", "daily"):
        return frozenset(range(7))
    out: set[int] = set()
    for item in spec.split(","):
        lo_name, dash, hi_name = item.partition("-")
        ends = [lo_name, hi_name] if dash else [lo_name]
        for name in ends:
            if _day(name) < 0:
                raise WindowError(
                    text,
                    "days",
                    f"{name.strip()!r} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun, "
                    "or * for every day)",
                )
        d, hi = _day(lo_name), _day(ends[-1])
        while True:  # Fri-Mon wraps over the week's end
            out.add(d)
            if d == hi:
                break
            d = (d + 1) % 7
    return frozenset(out)


def _minutes(value: str, text: str, field: str, *, allow_24: bool) -> int:
    m = _TIME.fullmatch(value)
    if m is None:
        raise WindowError(text, field, f"{value!r} is not a time HH:MM")
    hh, mm = int(m.group(1)), int(m.group(2))
    if allow_24 and (hh, mm) == (24, 0):
        return 1440
    if hh > 23 or mm > 59:
        top = "23:59 (or 24:00)" if allow_24 else "23:59"
        raise WindowError(text, field, f"{value!r} is not a time from 00:00 to {top}")
    return hh * 60 + mm


def parse_window(text: str) -> Window:
    """One window from its text, or ``WindowError`` naming the field at fault."""
    if not isinstance(text, str):
        raise WindowError(repr(text), "window", "must be a string like 'Sat,Sun 02:00-05:00'")
    if len(text) > MAX_TEXT:
        raise WindowError(text[:40] + "...", "window", f"is longer than {MAX_TEXT} characters")
    parts = text.split()
    if len(parts) != 2:
        raise WindowError(
            text, "window", "must be DAYS HH:MM-HH:MM, for example 'Sat,Sun 02:00-05:00'"
        )
    day_spec, span = parts
    days = _days(day_spec, text)
    start_s, dash, end_s = span.partition("-")
    if not dash:
        raise WindowError(text, "end", f"{span!r} has no end: write START-END as HH:MM-HH:MM")
    start = _minutes(start_s, text, "start", allow_24=False)
    end = _minutes(end_s, text, "end", allow_24=True)
    if start == end % 1440 and end != 1440:
        raise WindowError(text, "end", "must differ from the start (all day is '* 00:00-24:00')")
    return Window(days, start, end, f"{day_spec} {span}")


def parse_windows(texts: Iterable[str]) -> tuple[Window, ...]:
    items = list(texts)
    if len(items) > MAX_WINDOWS:
        raise WindowError(f"{len(items)} windows", "window", f"at most {MAX_WINDOWS} are allowed")
    return tuple(parse_window(t) for t in items)


def _wall(t: datetime, tz: tzinfo) -> datetime:
    return t.astimezone(tz).replace(tzinfo=None, fold=0)


def _instant(day: date, minutes: int, tz: tzinfo, *, last: bool) -> datetime:
    """The UTC instant of local ``day`` + ``minutes`` in ``tz`` (see the module's DST rule)."""
    naive = datetime(day.year, day.month, day.day) + timedelta(minutes=minutes)
    a = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    b = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if _wall(a, tz) == naive or _wall(b, tz) == naive:  # exists (once, or twice: ambiguous)
        return max(a, b) if last else min(a, b)
    # Skipped by a spring-forward jump: the first instant whose wall time is past it. Wall
    # time is monotonic across a gap, so bisect between the two readings (whole seconds).
    lo, hi = min(a, b), max(a, b)
    while (hi - lo) > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if _wall(mid, tz) >= naive:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0) if _wall(hi.replace(microsecond=0), tz) >= naive else hi


def span(window: Window, day: date, tz: tzinfo) -> tuple[datetime, datetime] | None:
    """``[start, end)`` in UTC of ``window``'s occurrence starting on local ``day``, or None
    when it does not start that day (or lies wholly in a skipped hour)."""
    if day.weekday() not in window.days:
        return None
    start = _instant(day, window.start, tz, last=False)
    end_day = day if window.end > window.start else day + timedelta(days=1)
    end = _instant(end_day, window.end, tz, last=True)
    return (start, end) if end > start else None


def _check_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")


def current(
    windows: Sequence[Window], now: datetime, tz: tzinfo
) -> tuple[datetime, datetime] | None:
    """The occurrence (UTC ``[start, end)``) that ``now`` lies in, latest-ending if several."""
    _check_aware(now)
    today = now.astimezone(tz).date()
    best: tuple[datetime, datetime] | None = None
    for w in windows:
        for back in (2, 1, 0):
            s = span(w, today - timedelta(days=back), tz)
            if s is not None and s[0] <= now < s[1] and (best is None or s[1] > best[1]):
                best = s
    return best


def next_opening(windows: Sequence[Window], now: datetime, tz: tzinfo) -> datetime | None:
    """The first start after ``now`` of any window (UTC), or None when there is none."""
    _check_aware(now)
    today = now.astimezone(tz).date()
    found: datetime | None = None
    for w in windows:
        for ahead in range(-1, _SEARCH_DAYS):
            s = span(w, today + timedelta(days=ahead), tz)
            if s is not None and s[0] > now:
                if found is None or s[0] < found:
                    found = s[0]
                break
    return found


def local_iso(t: datetime, tz: tzinfo) -> str:
    """``2026-12-05T02:00+01:00``: minutes, the device's offset (what messages show)."""
    local = t.astimezone(tz)
    off = local.strftime("%z")
    off = f"{off[:3]}:{off[3:]}" if off else "+00:00"
    sec = f":{local.second:02d}" if local.second else ""
    return local.strftime("%Y-%m-%dT%H:%M") + sec + off


__all__ = [
    "DAY_NAMES",
    "MAX_WINDOWS",
    "Window",
    "WindowError",
    "current",
    "local_iso",
    "next_opening",
    "parse_window",
    "parse_windows",
    "span",
]
