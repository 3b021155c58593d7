"""Applying fetched report messages to the fleet store: validation, ordering, exactly-once.

``apply_fetch`` runs on the store's writer thread with one fetch (up to 100 messages, any
devices) and commits everything it applies in ONE transaction; the caller acks after the
commit. For each message, in stream order, inside a savepoint of its own:

1. Decode strictly (``decode_report`` with the subject's device; a ``Nats-Msg-Id``, which
   agents no longer send, must match the body). Any ``MessageError``, or a device the hub
   does not know: ``term`` (never redelivered), counted and recorded as a hub event.
2. The batch's store epoch (``''`` for an older agent) selects the position it is applied
   against: a store made again numbers from 1 under a new epoch, which becomes the device's
   current one (a ``store_reset`` event), so its rows are applied rather than dropped as
   replays. A report of an older epoch still in the stream is applied against its own.
3. ``prev_seq > last_applied_seq``: an earlier batch is still on its way (the device resends
   it) -> ``nak`` with a delay, unless the message was delivered ``GIVE_UP_DELIVERIES``
   times already: then it is applied and the hole is recorded as a gap (a hub whose DB was
   restored from an older replica would otherwise wait forever). Never while the stream
   still holds an earlier report of the device (``Fetched.earlier_stored``, looked up by the
   ingest): that batch is not lost but held by a consumer that died with it unacked, and
   comes back after ``ACK_WAIT``. Giving up on it would drop its rows as replays.
4. A batch reaching beyond what the device can have numbered (``SEQ_SLACK`` above the
   larger of the position and the heartbeat's ``last_seq``) is never adopted: it waits for
   a heartbeat that explains it, and after ``JUMP_WAIT_DELIVERIES`` it is refused (term, a
   ``sync_seq_jump`` event). Adopting it would make every later real row a "replay".
5. Rows with ``seq <= last_applied_seq`` are replays and change nothing; each new row is
   applied in order; a jump is a gap (logged, and a ``sync_gap`` event; the device announces
   rows it dropped itself with an ``outbox.dropped`` event). ``last_applied_seq`` moves to
   the batch's last seq in the same transaction.

A row whose payload is malformed or out of range is skipped (counted, one event per batch)
but its sequence number is consumed: it can never become valid, and holding the device back
would stop its whole stream (what each row kind becomes is ``hub.sync.rows``). Anything else a message raises while applied (a value the
checks missed, a row handler's error) rolls back that message's savepoint only: it is nak'd
and, after ``POISON_DELIVERIES``, refused as that device's bad message. Only the store
itself failing (disk full, I/O) fails the fetch. Row handlers registered by other hub parts
(rollouts) run inside the same transaction, so their effects are exactly-once too.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub.store import Store
from hub.sync.apply_plan import plan_apply
from hub.sync.rows import RowError, RowWriter
from hub.timeutil import now_iso
from protocol.codec import valid_int64
from protocol.errors import MessageError
from protocol.report import MSG_ID_HEADER, ReportBatch, ReportRow, check_msg_id, decode_report
from protocol.subjects import device_from_subject

log = logging.getLogger(__name__)

GIVE_UP_DELIVERIES = 20  # naks at NAK_DELAY each: ~10 s waiting for an earlier batch
# A sequence jump beyond the heartbeat's last_seq waits this many deliveries (~60 s: two
# heartbeat intervals) for a heartbeat that explains it before it is refused.
JUMP_WAIT_DELIVERIES = 120
# Rows a device may number beyond its last heartbeat's last_seq (made since it was sent).
SEQ_SLACK = 10_000
# A message that raised while applied (not a store failure) is retried this many times,
# then refused: it must not hold back the device's stream, let alone everyone's.
POISON_DELIVERIES = 5
# Errors of the store itself (disk full, I/O, locked): the whole fetch is retried later.
STORE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)
# A flood of garbage must not flood the event log: at most one bad_message event per device
# (or per "unknown sender") in this many seconds; the metric counts every one.
BAD_EVENT_EVERY = 10.0

RowHandler = Callable[[Store, str, Sequence[ReportRow]], None]
"""Called inside the ingest transaction with a device's newly applied rows (in seq order)."""


@dataclass(frozen=True)
class Fetched:
    subject: str
    data: bytes
    msg_id: str | None
    delivered: int
    # The stream holds a report of this device stored before this one (unacked: a dead
    # consumer's in-flight message waiting for redelivery). Only looked up once a message
    # reached GIVE_UP_DELIVERIES, the one place it changes a decision.
    earlier_stored: bool = False


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
    store_resets: int = 0  # a device's store began again (new epoch)
    seq_jumps: int = 0  # batches refused for a sequence jump
    poison: int = 0  # messages that raised while applied (rolled back alone)


class Applier:
    """Holds the row handlers; ``apply_fetch`` is its one entry point."""

    def __init__(self) -> None:
        self.row_handlers: list[RowHandler] = []
        self._event_at: dict[tuple[str, str | None], float] = {}
        self._rows = RowWriter()  # the message's rows by kind, flushed with it

    def apply_fetch(self, store: Store, msgs: Sequence[Fetched]) -> Outcome:
        out = Outcome()
        positions: dict[tuple[str, str], int] = {}
        hours: set[tuple[str, str, int]] = set()
        self._rows.discard()
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
                    out.actions.append(self._isolated(store, m, out, positions, hours))
                # The hub's 1-hour rollups follow the minutes it holds (the agent sends
                # minutes only): new minutes were folded into their hours as each message
                # was written (``RowWriter.flush``); an hour the fold could not continue (a
                # minute rewritten, a row from before the fold) is recomputed once per fetch
                # from its minutes, so a rewrite or a late minute gives the same result.
                self._rollup(store, hours)
        finally:
            if fk_off:
                store.conn.execute("PRAGMA foreign_keys = ON")
        return out

    def _rollup(self, store: Store, hours: set[tuple[str, str, int]]) -> None:
        """All these hours at once; should that raise (not the store), device by device,
        so one device's hours never fail the fetch for every device (a failed one is marked
        unfoldable: recomputed whenever a minute of that hour arrives again)."""
        if not hours:
            return
        try:
            with _savepoint(store):
                store.rollup_hours(sorted(hours))
            return
        except STORE_ERRORS:
            raise
        except Exception:
            log.exception("hourly rollup failed; retrying device by device")
        by_device: dict[str, list[tuple[str, str, int]]] = {}
        for h in hours:
            by_device.setdefault(h[0], []).append(h)
        for device_id, mine in sorted(by_device.items()):
            try:
                with _savepoint(store):
                    store.rollup_hours(sorted(mine))
            except STORE_ERRORS:
                raise
            except Exception:
                log.exception("hourly rollup failed", extra={"device": device_id})
                store.forget_hours(sorted(mine))

    def _isolated(
        self,
        store: Store,
        m: Fetched,
        out: Outcome,
        positions: dict[tuple[str, str], int],
        hours: set[tuple[str, str, int]],
    ) -> str:
        """One message in a savepoint of its own: whatever it raises (but the store failing)
        undoes only its own writes and is settled for it alone."""
        before = (
            out.applied_rows,
            out.replayed_rows,
            out.skipped_rows,
            out.gaps,
            len(out.bad),
            set(out.devices),
            out.store_resets,
            out.seq_jumps,
        )
        saved_positions = dict(positions)
        self._rows.hours = set()
        try:
            with _savepoint(store):
                action = self._one(store, m, out, positions)
                self._rows.flush(store)
        except STORE_ERRORS:
            raise
        except Exception as exc:
            self._rows.discard()
            positions.clear()
            positions.update(saved_positions)
            (
                out.applied_rows,
                out.replayed_rows,
                out.skipped_rows,
                out.gaps,
                nbad,
                out.devices,
                out.store_resets,
                out.seq_jumps,
            ) = before
            del out.bad[nbad:]
            out.poison += 1
            log.exception(
                "a report on %s raised while applied (delivery %d); rolled back alone",
                m.subject[:128],
                m.delivered,
            )
            if m.delivered < POISON_DELIVERIES:
                return "nak"
            why = f"could not be applied: {type(exc).__name__}: {str(exc)[:200]}"
            self._bad(store, out, device_from_subject(m.subject), "unprocessable", why, m)
            return "term"
        hours.update(self._rows.hours)
        return action

    def _one(
        self,
        store: Store,
        m: Fetched,
        out: Outcome,
        positions: dict[tuple[str, str], int],
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
        epoch = batch.epoch or ""
        key = (device_id, epoch)
        last = positions.get(key)
        known = True
        if last is None:
            found = store.epoch_position(device_id, epoch)
            known = found is not None
            last = found or 0
        # The ordering/exactly-once rule is hub.sync.apply_plan.plan_apply (pure, and
        # property-tested); this applies what it decides.
        forced = m.delivered >= GIVE_UP_DELIVERIES and not m.earlier_stored
        plan = plan_apply(batch, last, force=forced, max_seq=self._max_seq(store, batch, last))
        if plan.wait:
            return "nak"
        if plan.too_far:
            if m.delivered < JUMP_WAIT_DELIVERIES:
                return "nak"  # a heartbeat sent since may explain it
            self._refuse_jump(store, out, batch, last, m)
            return "term"
        if batch.prev_seq > last:
            log.warning(
                "batch %s waited for rows %d..%d through %d deliveries; applying it",
                batch.msg_id,
                last + 1,
                batch.prev_seq,
                m.delivered,
                extra={"device": device_id},
            )
        if plan.rows:
            self._switch_epoch(store, out, device_id, epoch, known, batch)
        elif epoch == "" and plan.replayed and batch.prev_seq == 0 and batch.first_seq == 1:
            self._legacy_restart(store, device_id, batch, last)
        out.replayed_rows += plan.replayed
        if plan.rows:
            reported: dict[str, dict[str, Any]] = {}
            self._apply_rows(store, device_id, plan.rows, plan.gaps, out, reported)
            for dev, doc in reported.items():
                as_of = max(
                    (
                        part["as_of"]
                        for part in doc.values()
                        if isinstance(part, dict) and "as_of" in part
                    ),
                    default=now_iso(),
                )
                store.set_reported(dev, doc, as_of)
            store.set_sync_position(device_id, epoch, plan.last_applied)
            out.devices.add(device_id)
        positions[key] = plan.last_applied
        return "ack"

    def _max_seq(self, store: Store, batch: ReportBatch, last: int) -> int | None:
        """The highest seq the device can have numbered, when the batch reaches far enough
        above the position to ask: its newest heartbeat's ``last_seq`` (the outbox counter
        when it was sent) or the position, plus what it may have made since."""
        if batch.last_seq <= last + SEQ_SLACK:
            return None
        hb = store.get_heartbeat(batch.device_id)
        claimed = hb["state"].get("last_seq") if hb and isinstance(hb["state"], dict) else None
        base = int(claimed) if valid_int64(claimed) else 0  # type: ignore[arg-type]
        return max(last, base) + SEQ_SLACK

    def _refuse_jump(
        self, store: Store, out: Outcome, batch: ReportBatch, last: int, m: Fetched
    ) -> None:
        out.seq_jumps += 1
        why = (
            f"rows {batch.first_seq}..{batch.last_seq} jump beyond anything the device has"
            f" numbered (applied up to {last}; its heartbeat's last_seq plus {SEQ_SLACK});"
            " refused, the position stays"
        )
        self._bad(store, out, batch.device_id, "seq_jump", why, m, event_kind="sync_seq_jump")

    def _switch_epoch(
        self,
        store: Store,
        out: Outcome,
        device_id: str,
        epoch: str,
        known: bool,
        batch: ReportBatch,
    ) -> None:
        """Rows of an epoch that is not the device's current one are about to be applied:
        a new epoch (a store made again) becomes current, announced; a known one becomes
        current only while nothing was applied since the device (re-)enrolled."""
        current, pos = store.sync_epoch(device_id)
        if epoch == current:
            return
        if known and not (current == "" and pos == 0):
            return  # an older store's report, still in the stream: its own position only
        store.begin_epoch(device_id, epoch)
        if known or (current == "" and pos == 0):
            return  # the first report of a device's first store: nothing began *again*
        out.store_resets += 1
        self._rows.flush(store)
        log.warning(
            "the device's store began again: epoch %s (was %s, applied up to %d)",
            epoch or "none",
            current or "none",
            pos,
            extra={"device": device_id},
        )
        store.add_event(
            device_id,
            "store_reset",
            f"the device's store began again (its database was deleted or emptied): new rows"
            f" from seq {batch.first_seq} are applied; the previous store's rows were applied"
            f" up to {pos}",
            {"epoch": epoch, "previous_epoch": current, "previous_last_applied": pos},
            severity="warning",
        )

    def _legacy_restart(self, store: Store, device_id: str, batch: ReportBatch, last: int) -> None:
        """An older agent (no epoch) sent rows from 1 again, below the position: its store
        may have begun again, and these rows cannot be told from replays. Say so."""
        if not self._may_record(("replay", device_id)):
            return
        self._rows.flush(store)
        log.warning(
            "rows %d..%d arrived again below the position %d",
            batch.first_seq,
            batch.last_seq,
            last,
            extra={"device": device_id},
        )
        store.add_event(
            device_id,
            "sync_replay",
            f"rows {batch.first_seq}..{batch.last_seq} arrived again below the applied position"
            f" {last} and were taken as replays; if the device's store began again they were"
            " not applied (an agent that reports its store epoch avoids this)",
            {"from": batch.first_seq, "to": batch.last_seq, "last_applied": last},
            severity="warning",
        )

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
            self._rows.flush(store)
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

        def doc() -> dict[str, Any]:
            # Read once per device and message, and only when a row writes a part of it.
            if device_id not in reported:
                got = store.get_reported(device_id)
                state = got["state"] if got else {}
                reported[device_id] = state if isinstance(state, dict) else {}
            return reported[device_id]

        skipped: list[tuple[int, str]] = []
        for row in rows:
            try:
                self._rows.add(device_id, row, doc)
            except RowError as exc:
                skipped.append((row.seq, f"{row.kind}: {exc}"))
        out.applied_rows += len(rows) - len(skipped)
        if skipped or self.row_handlers:
            self._rows.flush(store)
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

    def _may_record(self, key: tuple[str, str | None]) -> bool:
        """At most one event per key every ``BAD_EVENT_EVERY`` seconds (a flood of garbage
        must not flood the event log; the metrics count every one)."""
        now = time.monotonic()
        if now - self._event_at.get(key, -BAD_EVENT_EVERY) < BAD_EVENT_EVERY:
            return False
        if len(self._event_at) > 100_000:
            self._event_at.clear()
        self._event_at[key] = now
        return True

    def _bad(
        self,
        store: Store,
        out: Outcome,
        device_id: str | None,
        code: str,
        why: str,
        m: Fetched,
        *,
        event_kind: str = "bad_message",
    ) -> None:
        known = device_id if device_id is not None and store.device_exists(device_id) else None
        out.bad.append((known, code, why))
        self._rows.flush(store)
        log.warning(
            "dropped a bad report on %s (%d bytes): %s",
            m.subject[:128],
            len(m.data),
            why[:300],
            extra={"device": device_id},
        )
        if not self._may_record((event_kind, known)):
            return
        store.add_event(
            known,
            event_kind,
            f"report dropped: {why[:300]}",
            {
                "subject": m.subject[:128],
                "code": code,
                "size": len(m.data),
                "msg_id": (m.msg_id or "")[:128],
            },
            severity="error" if event_kind == "sync_seq_jump" else "warning",
        )


class _savepoint:
    """``SAVEPOINT`` around one message inside the fetch's transaction: an exception rolls
    back that message's writes only."""

    def __init__(self, store: Store) -> None:
        self.conn = store.conn

    def __enter__(self) -> None:
        self.conn.execute("SAVEPOINT ingest_msg")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None and self.conn.in_transaction:
            self.conn.execute("ROLLBACK TO ingest_msg")
        if self.conn.in_transaction:
            self.conn.execute("RELEASE ingest_msg")


def fetched(
    subject: str,
    data: bytes,
    headers: dict[str, str] | None,
    delivered: int,
    earlier_stored: bool = False,
) -> Fetched:
    return Fetched(subject, data, (headers or {}).get(MSG_ID_HEADER), delivered, earlier_stored)
