"""Query-parameter parsing that names the offending field in every refusal.

Each helper returns a typed value or raises ``ApiError(INVALID, ..., field=name)``; unknown
parameters are refused too, so a typo (``?limt=5``) never silently means "the default".
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from datetime import datetime

from agent.http.errors import ApiError
from protocol import errors as perr

_RELATIVE = re.compile(r"-(\d{1,9})(s|m|h|d)")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_PARAM_LEN = 200
MIN_TIME = 0.0  # 1970-01-01T00:00:00Z
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z
RANGE_MESSAGE = "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z"
METRIC_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def invalid(field: str, message: str) -> ApiError:
    return ApiError(perr.INVALID, f"{field}: {message}", field)


def only(query: Mapping[str, str], allowed: Iterable[str]) -> None:
    allowed = set(allowed)
    for key in query:
        if key not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise invalid(key, f"unknown query parameter (allowed: {names})")


def _raw(query: Mapping[str, str], name: str) -> str | None:
    if hasattr(query, "getall") and len(query.getall(name, [])) > 1:
        raise invalid(name, "given more than once")
    value = query.get(name)
    if value is not None and len(value) > MAX_PARAM_LEN:
        raise invalid(name, f"longer than {MAX_PARAM_LEN} characters")
    return value


def integer(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    value = _raw(query, name)
    if value is None:
        return default
    if not re.fullmatch(r"-?\d{1,20}", value):
        raise invalid(name, f"must be an integer between {lo} and {hi}")
    n = int(value)
    if not lo <= n <= hi:
        raise invalid(name, f"must be an integer between {lo} and {hi}")
    return n


def optional_int(query: Mapping[str, str], name: str, lo: int, hi: int) -> int | None:
    return None if _raw(query, name) is None else integer(query, name, lo, lo, hi)


def boolean(query: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = _raw(query, name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise invalid(name, "must be one of 1, 0, true, false")


def choice(query: Mapping[str, str], name: str, default: str, choices: Iterable[str]) -> str:
    value = _raw(query, name)
    if value is None:
        return default
    options = list(choices)
    if value not in options:
        raise invalid(name, f"must be one of {', '.join(options)}")
    return value


def timestamp(query: Mapping[str, str], name: str, now: float | None = None) -> float | None:
    """Epoch seconds, RFC 3339 (``2026-11-26T10:00:00Z``) or relative (``-24h``, ``-90s``)."""
    value = _raw(query, name)
    if value is None:
        return None
    now = time.time() if now is None else now
    rel = _RELATIVE.fullmatch(value)
    if rel:
        return _in_range(name, now - int(rel.group(1)) * _UNIT[rel.group(2)])
    if re.fullmatch(r"\d{1,12}(\.\d{1,9})?", value):
        return _in_range(name, float(value))
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        dt = None
    if dt is None or dt.tzinfo is None:
        raise invalid(
            name,
            "must be epoch seconds, an RFC 3339 time with zone (2026-01-02T03:04:05Z) "
            "or relative like -24h",
        )
    ts = dt.timestamp()
    if not math.isfinite(ts):
        raise invalid(name, RANGE_MESSAGE)
    return _in_range(name, ts)


def _in_range(name: str, ts: float) -> float:
    # Nothing the agent records lies outside these years; a time outside them is a typo
    # (-825392257m is 1,570 years ago), and refusing it names the field instead of
    # letting it widen a query.
    if not MIN_TIME <= ts <= MAX_TIME:
        raise invalid(name, RANGE_MESSAGE)
    return ts
