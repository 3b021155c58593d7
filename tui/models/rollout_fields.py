"""The rollout parameters as an operator types them (``rollout start --phases/--canary/--bake/
--max-failures`` and the TUI's rollout form): one home for their grammar, so the CLI and the
TUI accept and refuse the same text. Each parser returns the value to send to
``rollouts.start`` or raises ``FieldError`` naming the field; the hub checks everything again
(that the steps grow, what a percentage of failures allows)."""

from __future__ import annotations

import re

from sbutil.duration import parse_duration

PERCENT_RE = re.compile(r"^(\d{1,3})%?$")
SHARE_RE = re.compile(r"^\d{1,9}(\.\d{1,2}%|%)?$")


class FieldError(ValueError):
    """A typed rollout parameter that cannot be right; ``field`` is the parameter's name as
    the form and the CLI show it (``phases``, ``bake``, ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def percent(text: str) -> int:
    """``--canary``: a percentage, 10 or 10% (0-100)."""
    m = PERCENT_RE.match(text.strip())
    if not m or int(m.group(1)) > 100:
        raise FieldError("canary", f"{text!r} is not a percentage like 10% (0-100)")
    return int(m.group(1))


def share(text: str) -> int | str:
    """``--max-failures``: a count (2) or a percentage of the devices (2%, 2.5%); the hub
    computes what it allows (per phase and overall), this only checks the form."""
    t = text.strip()
    if not SHARE_RE.match(t):
        raise FieldError("max failures", f"{text!r} is not a count like 2 or a percentage like 2%")
    return t if t.endswith("%") else int(t)


def steps(text: str) -> str:
    """``--phases``: comma-separated counts or percentages (the hub checks they grow)."""
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(SHARE_RE.match(p) for p in parts):
        raise FieldError("phases", f"{text!r} is not phases like 1%,10%,50%,100% or 5,50,100%")
    return ",".join(parts)


def bake(text: str) -> str:
    """``--bake``: checked with the project's one duration grammar (``sbutil.duration``: 90s,
    10m, 1h30m, 1d) and sent as typed; the hub parses it with the same function."""
    try:
        parse_duration(text, allow_zero=True)
    except ValueError as exc:
        raise FieldError("bake", f"{text!r}: {exc}") from exc
    return text.strip()
