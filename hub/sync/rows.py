"""Report rows by kind: what the hub keeps of each (pure but for ``RowWriter.flush``).

``event`` rows become ``events`` rows, ``metrics.1m`` rows ``metrics_1m`` rows (folded into
the 1-hour rollups of the hours they touch, ``fold``), and every ``REPORTED_PARTS`` kind is
written into the device's reported-state document (the shape ``protocol.reported``
describes and reads). Each payload is checked key by key: a malformed one raises
``RowError`` and is skipped alone (``hub.sync.apply`` counts it and consumes its seq). Kinds
the hub keeps nothing of (``oversized``, one a newer agent adds) only advance the sequence.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from hub.store import Store
from hub.store.telemetry import HourFold
from hub.timeutil import now_iso
from protocol.codec import valid_int64, valid_ts
from protocol.report import ReportRow
from protocol.reported import REPORTED_PARTS, RowKind

HOUR = 3600


class RowError(ValueError):
    """A row's payload is malformed or out of range: it is skipped, its seq consumed."""


_SECONDS: dict[int, str] = {}  # whole second -> its formatted prefix (events share seconds)


def iso(ts: float) -> str:
    """``now_iso(ts)``, with the strftime of each whole second cached: formatting was a
    visible share of the ingest thread's time (one call per event row)."""
    if not 0 <= ts < 2**40:
        return now_iso(ts)
    sec = int(ts)
    prefix = _SECONDS.get(sec)
    if prefix is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        prefix = _SECONDS[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{prefix}.{int(ts % 1 * 1000):03d}Z"


def _obj(payload: Any, kind: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise RowError(f"{kind} payload must be an object")
    return payload


def _num(v: Any, what: str) -> float:
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        raise RowError(f"{what} must be a finite number")
    return float(v)


def _ts(v: Any, what: str) -> float:
    if not valid_ts(v):
        raise RowError(f"{what} must be a time in seconds between 1970 and 2100")
    return float(v)


def event_row(device_id: str, row: ReportRow) -> tuple[Any, ...]:
    """The ``events`` row (``TelemetryStore.add_events``) for one event report row (its
    payload a ``protocol.reported.EventPayload``, checked key by key: a bad one is skipped)."""
    p = _obj(row.payload, "event")
    kind = p.get("kind")
    if not isinstance(kind, str) or not kind or len(kind) > 64:
        raise RowError("event kind must be a string of 1-64 characters")
    message = p.get("message") or ""
    if not isinstance(message, str):
        raise RowError("event message must be a string")
    data = p.get("data")
    if data is not None and not isinstance(data, dict):
        data = {"value": data}
    severity = p.get("severity") or "info"
    if not isinstance(severity, str) or len(severity) > 16:
        raise RowError("event severity must be a short string")
    seq = p.get("seq")
    if not valid_int64(seq):
        raise RowError("event seq must be an integer from 0 to 2**63-1")
    ts = _ts(p.get("ts", row.ts), "event ts")
    return (device_id, iso(ts), kind, message[:4096], json.dumps(data or {}), seq, severity)


def metrics_row(device_id: str, row: ReportRow) -> tuple[list[tuple[Any, ...]], int]:
    """The ``metrics_1m`` rows ``(device, name, ts, min, avg, max)`` of one report row (a
    ``protocol.reported.MetricsPayload``), and
    the start of the hour they belong to. Validated whole before any is kept: a bad metric
    skips the row."""
    p = _obj(row.payload, "metrics.1m")
    bucket = _ts(p.get("bucket"), "metrics.1m bucket")
    metrics = p.get("metrics")
    if not isinstance(metrics, dict):
        raise RowError("metrics.1m metrics must be an object")
    ts = int(bucket)
    out = []
    for name, agg in metrics.items():
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise RowError("metric names must be 1-64 characters")
        if not isinstance(agg, list) or len(agg) < 3:
            raise RowError(f"metric {name!r} must be [min, avg, max, count]")
        what = f"metric {name!r}"
        out.append(
            (device_id, name, ts, _num(agg[0], what), _num(agg[1], what), _num(agg[2], what))
        )
    return out, ts // HOUR * HOUR


def fold(minutes: list[tuple[Any, ...]]) -> list[HourFold]:
    """The ``metrics_1m`` rows ``(device, name, ts, min, avg, max)`` summed per (device,
    name, hour start): ``(device, name, hour, min, max, sum of avg, count)``, what
    ``Store.fold_minutes`` adds to each hour row. The hour row it makes equals a recompute
    from its minutes (``Store.rollup_hours``): min of minimums, max of maximums, mean of the
    averages (equal up to the order the averages are summed in: the last bits of ``avg``)."""
    acc: dict[tuple[str, str, int], list[Any]] = {}
    for device_id, name, ts, lo, avg, hi in minutes:
        key = (device_id, name, ts // HOUR * HOUR)
        a = acc.get(key)
        if a is None:
            acc[key] = [lo, hi, avg, 1]
        else:
            a[0] = min(a[0], lo)
            a[1] = max(a[1], hi)
            a[2] += avg
            a[3] += 1
    return [(d, n, h, a[0], a[1], a[2], a[3]) for (d, n, h), a in acc.items()]


def reported_part(doc: dict[str, Any], kind: RowKind, row: ReportRow) -> None:
    """Write one ``REPORTED_PARTS`` row into the device's reported-state document (the
    shape ``protocol.reported`` describes and reads)."""
    p = _obj(row.payload, kind)
    ts = p.get("ts") if kind is RowKind.OBSERVED else None
    as_of = iso(_ts(ts, "observed ts") if ts is not None else row.ts)
    doc[kind.value] = {**p, "as_of": as_of}
    if kind is RowKind.DEPLOYMENT and p.get("status") == "healthy":
        doc["running"] = {
            "bundle_ref": p.get("bundle_ref"),
            "generation": p.get("generation"),
            "as_of": as_of,
        }


class RowWriter:
    """The rows of the message being applied, by kind, buffered for one ``executemany``
    each (one statement per row cost more than the insert itself). ``flush`` writes them at
    the end of each message (inside its savepoint), and always before anything else writes
    an event or reads these tables, so event ids keep the order the rows arrived in."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.minutes: list[tuple[Any, ...]] = []
        # (device, metric, hour) of this message to recompute from its minutes at the end of
        # the fetch: those a fold could not continue (``Store.fold_minutes``).
        self.hours: set[tuple[str, str, int]] = set()

    def add(
        self,
        device_id: str,
        row: ReportRow,
        reported: Callable[[], dict[str, Any]],
    ) -> None:
        """Take one row; ``reported()`` gives the device's reported-state document to write
        a part into. Raises ``RowError`` for a malformed payload."""
        kind = RowKind.of(row.kind)
        if kind is RowKind.EVENT:
            self.events.append(event_row(device_id, row))
        elif kind is RowKind.METRICS_1M:
            minutes, _hour = metrics_row(device_id, row)
            self.minutes += minutes
        elif kind is not None and kind in REPORTED_PARTS:
            reported_part(reported(), kind, row)
        # Other kinds (e.g. "oversized", or one a newer agent adds) only advance the
        # sequence: the hub has nothing to keep from them.

    def flush(self, store: Store) -> None:
        if self.events:
            store.add_events(self.events)
            self.events = []
        if self.minutes:
            # Folded into their hours here, inside the message's savepoint (a rolled-back
            # message takes its fold with it); what cannot be folded is recomputed.
            if not store.fold_minutes(self.minutes, fold(self.minutes)):
                self.hours.update((m[0], m[1], m[2] // HOUR * HOUR) for m in self.minutes)
            self.minutes = []

    def discard(self) -> None:
        """Drop what is buffered (the message's savepoint was rolled back)."""
        self.events, self.minutes = [], []
