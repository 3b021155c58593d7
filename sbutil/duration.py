"""The one duration grammar of every SignalBeam setting: the agent's and the hub's config files
and a bundle's timeouts all read ``"90s"``, ``"1h30m"``, ``"500ms"`` or ``"7d"`` alike.

A number (int or float, never a bool) is seconds. A string is one or more ``<n><unit>`` parts
(``n`` a decimal number, ``unit`` one of ms s m h d, case-insensitive: there is no month unit
to confuse with ``M``), surrounding whitespace ignored. Each caller adds its own bounds (a
positive interval, at most 24h for a bundle) and its own field path to the error.
"""

from __future__ import annotations

import math
import re
from typing import Any

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_FULL = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

DURATION_HELP = 'seconds (a number) or a duration like "10s", "500ms", "2m", "1h30m", "7d"'


def parse_duration(value: Any, *, allow_zero: bool = False) -> float:
    """Seconds from ``value``; ``ValueError`` naming the input otherwise. Zero is refused unless
    ``allow_zero`` (a bundle's ``start_period: 0``); a negative or non-finite one always."""
    kind = "duration" if allow_zero else "positive duration"
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond float range
            seconds = math.inf
    elif isinstance(value, str) and _FULL.fullmatch(text := value.strip().lower()):
        seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(text))
    else:
        raise ValueError(f"{_shown(value)} is not a {kind}: use {DURATION_HELP}")
    if not math.isfinite(seconds):
        raise ValueError(f"{_shown(value)} is not a finite {kind}")
    if seconds < 0:
        raise ValueError(f"{_shown(value)} is not a {kind}: it must not be negative")
    if seconds == 0 and not allow_zero:
        raise ValueError(f"{_shown(value)} is not a {kind}: it must be above zero")
    return seconds


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
