"""May a new revision start now? Update locks and maintenance windows, one pure decision.

``decide`` is the whole rule (no clock, no I/O: the caller reads the locks and passes the
time), in this order:

1. A rollback is always allowed: a device must be able to return to what ran healthy, lock
   or no lock, window or not.
2. An operator's override (``force`` in the desired document, ``signalbeam device
   force-update``) starts the revision through locks and windows.
3. A held update lock defers it: "locked by <who> since <time>" (no end: until released).
4. Maintenance windows, when any are set, defer it outside them: "outside maintenance
   window until <next opening>", in the device's local time.

Only the *start* of a revision is gated: once its deployment began, it runs to its health
verdict (and, failing, rolls back) even if a lock is taken or the window closes meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal, Protocol

from bundles.model import BundleSpec
from bundles.windows import Window, current, local_iso, next_opening
from protocol.desired import DesiredState

Kind = Literal["allow", "locked", "window"]


@dataclass(frozen=True)
class Lock:
    """One held update lock. ``source``: ``api`` (the local HTTP API) or ``file:<name>`` (a
    lock file an app created)."""

    who: str
    since: float  # wall clock, seconds
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"who": self.who, "since": self.since, "source": self.source}


@dataclass(frozen=True)
class Decision:
    kind: Kind
    reason: str | None = None  # "locked by anna since ...", for people
    until: datetime | None = None  # when a window opens (UTC); None: until a lock is released

    @property
    def allow(self) -> bool:
        return self.kind == "allow"

    def describe(self) -> str:
        return "allowed" if self.allow else f"deferred: {self.reason}"


ALLOW = Decision("allow")


def decide(
    *,
    now: datetime,
    tz: tzinfo,
    locks: Sequence[Lock],
    windows: Sequence[Window],
    rollback: bool = False,
    force: bool = False,
) -> Decision:
    """Allow, or defer with the reason and (for a window) until when. ``now`` is aware."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if rollback or force:
        return ALLOW
    if locks:
        first = min(locks, key=lambda lk: (lk.since, lk.who))
        since = local_iso(datetime.fromtimestamp(first.since, UTC), tz)
        more = f" (and {len(locks) - 1} more)" if len(locks) > 1 else ""
        return Decision("locked", f"locked by {first.who} since {since}{more}")
    if windows and current(windows, now, tz) is None:
        until = next_opening(windows, now, tz)
        if until is None:  # every window lies in skipped hours for two weeks: say so
            return Decision("window", "outside maintenance window (none opens in two weeks)")
        return Decision("window", f"outside maintenance window until {local_iso(until, tz)}", until)
    return ALLOW


class GatePort(Protocol):
    """What the reconcile loop asks before a new revision starts (``agent.updategate``)."""

    def check(self, desired: DesiredState, spec: BundleSpec | None) -> Decision:
        """Read the locks, windows and clock; decide."""
        ...

    def note(self, desired: DesiredState, decision: Decision) -> None:
        """Report the decision (the ``gate`` reported part)."""
        ...


__all__ = ["ALLOW", "Decision", "GatePort", "Kind", "Lock", "decide"]
