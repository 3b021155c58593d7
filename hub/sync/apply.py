"""Applying fetched report messages to the fleet store: validation, ordering, exactly-once.

``apply_fetch`` runs on the store's writer thread with one fetch (up to 100 messages, any
devices) and commits everything it applies in ONE transaction; the caller acks after the
commit. For each message, in stream order:

1. Decode strictly (``decode_report`` with the subject's device, ``check_msg_id``). Any
   ``MessageError``, or a device the hub does not know: ``term`` (never redelivered), counted
   and recorded as a hub event.
2. ``prev_seq > last_applied_seq``: an earlier batch is still on its way (the device resends
   it) -> ``nak`` with a delay, unless the message was delivered ``GIVE_UP_DELIVERIES``
   times already: then it is applied and the hole is recorded as a gap (a hub whose DB was
   restored from an older replica would otherwise wait forever).
3. Rows with ``seq <= last_applied_seq`` are replays and change nothing; each new row is
   applied in order; a jump is a gap (logged, and a ``sync_gap`` event; the device announces
   rows it dropped itself with an ``outbox.dropped`` event). ``last_applied_seq`` moves to
   the batch's last seq in the same transaction.

A row whose payload is malformed is skipped (counted, one event per batch) but its sequence
number is consumed: it can never become valid, and holding the device back would stop its
whole stream. Row handlers registered by other hub parts (rollouts) run inside the same
transaction, so their effects are exactly-once too.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub.store import Store
from hub.timeutil import now_iso
from protocol.messages import (
    MSG_ID_HEADER,
    MessageError,
    ReportRow,
    check_msg_id,
    decode_report,
    plan_apply,
)
from protocol.subjects import device_from_subject

log = logging.getLogger(__name__)

GIVE_UP_DELIVERIES = 20  # naks at NAK_DELAY each: ~10 s waiting for an earlier batch
# A flood of garbage must not flood the event log: at most one bad_message event per device
# (or per "unknown sender") in this many seconds; the metric counts every one.
BAD_EVENT_EVERY = 10.0
HOUR = 3600
REPORTED_PARTS = ("observed", "desired", "deployment", "reconcile")

RowHandler = Callable[[Store, str, Sequence[ReportRow]], None]
"""Called inside the ingest transaction with a device's newly applied rows (in seq order)."""


class RowError(ValueError):
    pass


@dataclass(frozen=True)
class Fetched:
    subject: str
    data: bytes
    msg_id: str | None
    delivered: int


@dataclass
class Outcome:
    """Per message: "ack", "nak" or "term"; plus what the batch did, for metrics and logs."""

    actions: list[str] = field(default_factory=list)
    applied_rows: int = 0
    replayed_rows: int = 0
    skipped_rows: int = 0
    gaps: int = 0
    bad: list[tuple[str | None, str, str]] = field(default_factory=list)  # device, code, why
    devices: set[str] = field(default_factory=set)


_SECONDS: dict[int, str] = {}  # whole second -> its formatted prefix (events share seconds)


def _iso(ts: float) -> str:
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


def _event_row(device_id: str, row: ReportRow) -> tuple[Any, ...]:
    """The ``events`` row (``TelemetryStore.add_events``) for one event report row."""
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
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise RowError("event seq must be an integer")
    ts = _num(p.get("ts", row.ts), "event ts")
    return (device_id, _iso(ts), kind, message[:4096], json.dumps(data or {}), seq, severity)


def _metrics_row(device_id: str, row: ReportRow) -> tuple[list[tuple[Any, ...]], int]:
    """The ``metrics_1m`` rows ``(device, name, ts, min, avg, max)`` of one report row, and
    the start of the hour they belong to. Validated whole before any is kept: a bad metric
    skips the row."""
    p = _obj(row.payload, "metrics.1m")
    bucket = p.get("bucket")
    if not isinstance(bucket, int | float) or isinstance(bucket, bool):
        raise RowError("metrics.1m bucket must be a number")
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


def _reported_part(doc: dict[str, Any], row: ReportRow) -> None:
    p = _obj(row.payload, row.kind)
    ts = p.get("ts") if row.kind == "observed" else None
    as_of = _iso(_num(ts, "observed ts") if ts is not None else row.ts)
    doc[row.kind] = {**p, "as_of": as_of}
    if row.kind == "deployment" and p.get("status") == "healthy":
        doc["running"] = {
            "bundle_ref": p.get("bundle_ref"),
            "generation": p.get("generation"),
            "as_of": as_of,
        }


class Applier:
    """Holds the row handlers; ``apply_fetch`` is its one entry point."""

    def __init__(self) -> None:
        self.row_handlers: list[RowHandler] = []
        self._bad_event_at: dict[str | None, float] = {}
        self._hours: set[tuple[str, str, int]] = set()  # (device, metric, hour) this fetch
        # Rows waiting for one executemany each (one statement per row cost more than the
        # insert itself); written by _flush, always before anything else writes an event or
        # reads these tables, so event ids keep the order the rows arrived in.
        self._events: list[tuple[Any, ...]] = []
        self._minutes: list[tuple[Any, ...]] = []

    def apply_fetch(self, store: Store, msgs: Sequence[Fetched]) -> Outcome:
        out = Outcome()
        positions: dict[str, int] = {}
        reported: dict[str, dict[str, Any]] = {}
        self._hours = set()
        self._events, self._minutes = [], []
        # Every row written here belongs to a device this transaction checked exists
        # (``device_exists``), on the one writer thread, so nothing can delete it meanwhile:
        # the per-row foreign-key lookup (a third of a metric upsert) proves nothing more.
        # The pragma is a no-op inside a transaction, hence around it, and always restored.
        fk_off = not store._depth
        if fk_off:
            store.conn.execute("PRAGMA foreign_keys = OFF")
        try:
            with store.tx():
                for m in msgs:
                    out.actions.append(self._one(store, m, out, positions, reported))
                self._flush(store)
                # The hub's 1-hour rollups follow the minutes it holds (the agent sends
                # minutes only): each touched (device, metric, hour) is recomputed once per
                # fetch from its minutes, so a replay or a late minute gives the same result.
                store.rollup_hours(sorted(self._hours))
                for device_id, doc in reported.items():
                    as_of = max(
                        (
                            part["as_of"]
                            for k, part in doc.items()
                            if isinstance(part, dict) and "as_of" in part
                        ),
                        default=now_iso(),
                    )
                    store.set_reported(device_id, doc, as_of)
        finally:
            if fk_off:
                store.conn.execute("PRAGMA foreign_keys = ON")
        return out

    def _one(
        self,
        store: Store,
        m: Fetched,
        out: Outcome,
        positions: dict[str, int],
        reported: dict[str, dict[str, Any]],
    ) -> str:
        subject_device = device_from_subject(m.subject)
        try:
            if subject_device is None:
                raise MessageError("subject", f"not a device report subject: {m.subject[:128]!r}")
            batch = decode_report(m.data, subject_device=subject_device)
            check_msg_id(batch, m.msg_id)
        except MessageError as exc:
            self._bad(store, out, subject_device, exc.code, f"{exc.field}: {exc.message}", m)
            return "term"
        device_id = batch.device_id
        if not store.device_exists(device_id):
            self._bad(store, out, None, "unknown_device", f"no device {device_id!r}", m)
            return "term"
        last = positions.get(device_id)
        if last is None:
            last = store.last_applied_seq(device_id)
        # The ordering/exactly-once rule is protocol.messages.plan_apply (shared, and
        # property-tested there); this applies what it decides.
        forced = m.delivered >= GIVE_UP_DELIVERIES
        plan = plan_apply(batch, last, force=forced)
        if plan.wait:
            return "nak"
        if batch.prev_seq > last:
            log.warning(
                "batch %s waited for rows %d..%d through %d deliveries; applying it",
                batch.msg_id,
                last + 1,
                batch.prev_seq,
                m.delivered,
                extra={"device": device_id},
            )
        out.replayed_rows += plan.replayed
        if plan.rows:
            self._apply_rows(store, device_id, plan.rows, plan.gaps, out, reported)
            store.set_last_applied_seq(device_id, plan.last_applied)
            out.devices.add(device_id)
        positions[device_id] = plan.last_applied
        return "ack"

    def _flush(self, store: Store) -> None:
        if self._events:
            store.add_events(self._events)
            self._events = []
        if self._minutes:
            store.put_metric_rows("1m", self._minutes)
            self._minutes = []

    def _apply_rows(
        self,
        store: Store,
        device_id: str,
        rows: Sequence[ReportRow],
        gaps: Sequence[tuple[int, int]],
        out: Outcome,
        reported: dict[str, dict[str, Any]],
    ) -> None:
        if gaps:
            self._flush(store)
        for first, last in gaps:
            out.gaps += 1
            log.warning(
                "sequence gap: rows %d..%d never arrived", first, last, extra={"device": device_id}
            )
            store.add_event(
                device_id,
                "sync_gap",
                f"rows {first}..{last} never reached the hub",
                {"from": first, "to": last},
                severity="warning",
            )
        skipped: list[tuple[int, str]] = []
        for row in rows:
            try:
                if row.kind == "event":
                    self._events.append(_event_row(device_id, row))
                elif row.kind == "metrics.1m":
                    minutes, hour = _metrics_row(device_id, row)
                    self._minutes += minutes
                    self._hours.update((device_id, m[1], hour) for m in minutes)
                elif row.kind in REPORTED_PARTS:
                    if device_id not in reported:
                        got = store.get_reported(device_id)
                        state = got["state"] if got else {}
                        reported[device_id] = state if isinstance(state, dict) else {}
                    _reported_part(reported[device_id], row)
                # Other kinds (e.g. "oversized", or one a newer agent adds) only advance the
                # sequence: the hub has nothing to keep from them.
            except RowError as exc:
                skipped.append((row.seq, f"{row.kind}: {exc}"))
        out.applied_rows += len(rows) - len(skipped)
        if skipped or self.row_handlers:
            self._flush(store)
        if skipped:
            out.skipped_rows += len(skipped)
            log.warning(
                "skipped %d malformed rows (first: seq %d %s)",
                len(skipped),
                *skipped[0],
                extra={"device": device_id},
            )
            store.add_event(
                device_id,
                "bad_rows",
                f"{len(skipped)} malformed report rows skipped",
                {"rows": [{"seq": s, "error": e} for s, e in skipped[:20]]},
                severity="warning",
            )
        for handler in self.row_handlers:
            handler(store, device_id, rows)

    def _bad(
        self,
        store: Store,
        out: Outcome,
        device_id: str | None,
        code: str,
        why: str,
        m: Fetched,
    ) -> None:
        known = device_id if device_id is not None and store.device_exists(device_id) else None
        out.bad.append((known, code, why))
        self._flush(store)
        log.warning(
            "dropped a bad report on %s (%d bytes): %s",
            m.subject[:128],
            len(m.data),
            why[:300],
            extra={"device": device_id},
        )
        now = time.monotonic()
        if now - self._bad_event_at.get(known, -BAD_EVENT_EVERY) < BAD_EVENT_EVERY:
            return
        self._bad_event_at[known] = now
        store.add_event(
            known,
            "bad_message",
            f"report dropped: {why[:300]}",
            {
                "subject": m.subject[:128],
                "code": code,
                "size": len(m.data),
                "msg_id": (m.msg_id or "")[:128],
            },
            severity="warning",
        )


def fetched(subject: str, data: bytes, headers: dict[str, str] | None, delivered: int) -> Fetched:
    return Fetched(subject, data, (headers or {}).get(MSG_ID_HEADER), delivered)
