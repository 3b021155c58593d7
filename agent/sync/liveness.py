"""What "online" means, in one place (pure; no NATS import, so ``signalbeam-agent status``
can use it without loading the client).

Online means end to end: the hub itself answered recently. The answers that count are a
heartbeat's reply, a PubAck of the report stream and a direct-get reply of the device's desired
key. The leaf server's own view of its TCP link (``/leafz``) never makes the agent online: a
link held open but silent (no RST) looks up there for minutes. It can only make it offline
sooner (a reset link is seen at once).

The heartbeat task asks every ``interval`` and waits ``ack_timeout`` (at most half an
interval) for the reply, then, if the hub did not answer the heartbeat itself, the fallback
read (at most half of that again); no answer marks the link lost at once. A safety net marks
it lost when nothing answered for ``stale_after`` seconds, whatever kept the probe from
running. So the status says "hub unreachable" at most ``interval + ack_timeout + fallback``
(at most 1.75 intervals) after the last answer: 42 s with the defaults (30 s interval, 10 s
timeout, 2 s read), within two intervals.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def ack_timeout_for(interval: float, wanted: float) -> float:
    """The heartbeat's reply timeout: ``wanted``, but at most half an interval."""
    return max(0.05, min(wanted, interval / 2))


def stale_after(interval: float, ack_timeout: float, fallback_timeout: float = 0.0) -> float:
    """Seconds without any answer after which the link counts as lost: one interval plus the
    time one probe may take (its reply timeout, then the fallback read)."""
    return interval + ack_timeout + fallback_timeout


def is_stale(now: float, last_answer: float | None, stale: float) -> bool:
    """True when the last answer is older than ``stale`` seconds (None: never answered)."""
    return last_answer is None or now - last_answer > stale


def unreachable_since(
    online: bool | None, last_answer: float | None, started_at: float | None
) -> float | None:
    """Since when the hub has not answered: the last answer, else when sync started; None
    while online or when no hub is configured."""
    if online is None or online:
        return None
    return last_answer if last_answer is not None else started_at


def when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe(status: dict[str, Any] | None, now: float) -> str:
    """One line for people, from ``SyncService.status()`` (or the status file):
    ``online (leaf), last answer from the hub 3 s ago`` or
    ``unreachable since 2026-01-02 03:04:05 UTC (leaf): <why>`` (printed after "hub")."""
    if not status:
        return "sync has not run (not enrolled, or no [hub] url)"
    mode = status.get("mode") or "?"
    last = status.get("last_contact")
    last = last if isinstance(last, int | float) else None
    if status.get("online"):
        ago = "" if last is None else f", last answer from the hub {max(0.0, now - last):.0f} s ago"
        return f"online ({mode}){ago}"
    since = status.get("unreachable_since")
    since = since if isinstance(since, int | float) else last
    why = status.get("last_error")
    head = f"unreachable since {when(since)}" if since is not None else "unreachable, no answer yet"
    return f"{head} ({mode})" + (f": {why}" if why else "")
