"""Pure parts of the ``devices.list`` summary view: what a device runs, how its deployment
and containers are, its rollout row and its metric sparklines.

No I/O: the store hands over the rows of one page (``hub.store.summary``) and these functions
shape them. The reported state is whatever the device last sent; it is read through
``protocol.reported.ReportedState``, which tolerates missing or unexpected fields.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from protocol.reported import ReportedState, container_bad

# The agent's host metric names (agent/metrics/sampler.py) -> the summary's keys.
SUMMARY_METRICS: dict[str, str] = {
    "cpu.percent": "cpu",
    "mem.percent": "mem",
    "disk.percent": "disk",
}
SPARK_BUCKETS = 12
SPARK_SECONDS = 300  # 12 x 5 min = the last hour
SPARK_WINDOW = SPARK_BUCKETS * SPARK_SECONDS


def running_ref(state: Any) -> str | None:
    """``bundle@version`` the device says it runs, from its reported state document.

    The order matches the TUI's ``running_ref`` (``ReportedState.stated_ref``: a top-level
    ``bundle_ref``; the deployment when healthy or applying; the hub's own ``running`` part,
    the last healthy deployment, which after a failed update still names what runs), then
    the flat ``bundle``/``version``.
    """
    s = ReportedState.read(state)
    return s.stated_ref() or s.flat_ref()


def runs(state: Any, want: str) -> bool:
    """Whether the device runs ``want``: ``NAME`` (any version) or ``NAME@VERSION``."""
    ref = running_ref(state)
    if ref is None:
        return False
    return ref == want if "@" in want else ref.partition("@")[0] == want


def deployment(state: Any) -> dict[str, Any] | None:
    """``{status, error, as_of}``; ``error`` is the agent's reason when the deployment
    failed or was rolled back, else null; ``as_of`` when the hub received it and, for a
    failed one, ``bundle_ref`` (each absent in documents without it)."""
    dep = ReportedState.read(state).deployment
    if dep is None or dep.status is None:
        return None
    out: dict[str, Any] = {"status": dep.status, "error": dep.reason if dep.failed else None}
    if dep.as_of:  # when the hub received it: a newer healthy snapshot supersedes a failure
        out["as_of"] = dep.as_of
    if dep.bundle_ref and dep.failed:  # what failed (and, if it recovers, runs)
        out["bundle_ref"] = dep.bundle_ref
    return out


def gate(state: Any) -> dict[str, Any] | None:
    """``{reason, kind, until, generation, bundle_ref, as_of}`` while the device defers a new
    revision (an update lock held, or outside its maintenance windows: the agent's ``gate``
    part, docs/sync.md); null when nothing waits or the device never said."""
    part = ReportedState.read(state).gate
    if part is None or not part.deferred:
        return None
    out: dict[str, Any] = {"reason": part.reason or "deferred"}
    for key, value in (
        ("kind", part.kind),
        ("until", part.until),
        ("bundle_ref", part.bundle_ref),
        ("as_of", part.as_of),
    ):
        if value:
            out[key] = value
    if part.generation is not None:
        out["generation"] = part.generation
    if part.locks is not None:
        out["locks"] = [
            {"who": str(lk.get("who")), "since": lk.get("since"), "source": lk.get("source")}
            for lk in part.locks[:20]
        ]
    return out


def containers(state: Any) -> dict[str, Any] | None:
    """``{total, bad, as_of}`` from the observed snapshot; bad = exited, dead, restarting or
    unhealthy; ``as_of`` the snapshot's time (absent when unknown). Null when the device
    never reported containers."""
    s = ReportedState.read(state)
    if s.containers is None:
        return None
    bad = sum(1 for c in s.containers if container_bad(c))
    out: dict[str, Any] = {"total": len(s.containers), "bad": bad}
    if s.observed_as_of:
        out["as_of"] = s.observed_as_of
    return out


def spark_window(now: float) -> tuple[int, int]:
    """``[start, end)`` of the sparkline: 12 five-minute buckets aligned to the clock, the
    newest holding the current (partial) five minutes. Aligned so a refresh a few seconds
    later shows the same buckets."""
    end = (int(now) // SPARK_SECONDS + 1) * SPARK_SECONDS
    return end - SPARK_WINDOW, end


def _round(value: float) -> float:
    return round(value, 1) if math.isfinite(value) else 0.0


def sparks(
    buckets: Iterable[tuple[str, str, int, float, int]], last: Iterable[tuple[str, str, float]]
) -> dict[str, dict[str, Any]]:
    """Per device, the ``metrics`` object.

    ``buckets``: ``(device, metric name, bucket index 0-11, sum of minute averages, minutes)``
    (``hub.store.summary``); ``last``: ``(device, metric name, newest minute average)``. Each
    bucket is the mean of its minute averages, an empty one null. A metric without rows in
    the hour is null; a device without any has no entry (its ``metrics`` is null).
    """
    newest = {(d, SUMMARY_METRICS[n]): float(a) for d, n, a in last if n in SUMMARY_METRICS}
    out: dict[str, dict[str, Any]] = {}
    for device, name, b, total, n in buckets:
        key = SUMMARY_METRICS.get(name)
        if key is None or not 0 <= b < SPARK_BUCKETS or not n:
            continue
        entry = out.get(device)
        if entry is None:
            entry = out[device] = dict.fromkeys(SUMMARY_METRICS.values())
        metric = entry[key]
        if metric is None:
            metric = entry[key] = {"last": None, "spark": [None] * SPARK_BUCKETS}
        metric["spark"][b] = _round(float(total) / n)
    for device, entry in out.items():
        for key, metric in entry.items():
            if metric is not None:
                value = newest.get((device, key))
                fallback = next(x for x in reversed(metric["spark"]) if x is not None)
                metric["last"] = fallback if value is None else _round(value)
    return out
