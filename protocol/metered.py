"""Metered links: a device's data budget, written like ``100KB/day`` (pure; shared by the hub,
which validates and delivers it, and the agent, which paces its traffic by it).

Units are decimal, as carriers bill: ``B``, ``KB`` (1000 B), ``MB``, ``GB``; ``KiB``/``MiB``
are binary. The period is ``day``, ``week`` or ``month`` (30 days); everything is kept as
bytes per day. The budget is for the TCP payload of the device's link to the hub, both ways,
after the leaf's compression (docs/performance.md "Bytes on the wire").
"""

from __future__ import annotations

import re

from protocol.errors import MessageError

UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
PERIODS = {"day": 1, "d": 1, "week": 7, "w": 7, "month": 30, "mo": 30}
# Below this no pacing fits: the leaf link's own keepalives alone cost about this much.
MIN_BUDGET = 10_000
MAX_BUDGET = 10**12

_FORM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*(?:/\s*([a-z]+))?\s*$")


class BudgetError(MessageError):
    """A budget that does not parse or is out of range (``field`` is ``budget``)."""

    def __init__(self, message: str) -> None:
        super().__init__("budget", message)


def parse_budget(text: str) -> int:
    """Bytes per day of ``100KB/day``, ``2MB/week``, ``50MiB/month`` (no period: per day)."""
    m = _FORM.match(text.lower()) if isinstance(text, str) else None
    if m is None or m.group(2) not in UNITS or (m.group(3) or "day") not in PERIODS:
        raise BudgetError(
            f"{text!r} is not a budget like '100KB/day' (units B, KB, MB, GB, KiB, MiB, GiB;"
            " per day, week or month)"
        )
    per_day = float(m.group(1)) * UNITS[m.group(2)] / PERIODS[m.group(3) or "day"]
    return check_budget(round(per_day))


def check_budget(per_day: object) -> int:
    """A budget in bytes per day as it travels (an int), checked for range."""
    if not isinstance(per_day, int) or isinstance(per_day, bool):
        raise BudgetError("must be a whole number of bytes per day")
    if not MIN_BUDGET <= per_day <= MAX_BUDGET:
        raise BudgetError(
            f"{format_budget(per_day)} is out of range ({format_budget(MIN_BUDGET)} at least)"
        )
    return per_day


def format_budget(per_day: int | None) -> str:
    """``100KB/day`` for 100000; ``-`` for None (not metered)."""
    if per_day is None:
        return "-"
    return f"{format_bytes(per_day)}/day"


def format_bytes(n: float) -> str:
    for unit, size in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}B"
