"""The device event log: append-only, each event with its outbox row."""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

from agent.errors import StoreError
from agent.reconcile.ports import Severity
from agent.store import outbox
from agent.store.base import StoreBase, dumps, loads, next_seq, rows
from agent.store.rows import EventRow
from protocol.reported import RowKind

log = logging.getLogger(__name__)

SEVERITIES = ("debug", "info", "warning", "error")


def append(
    c: sqlite3.Connection,
    kind: str,
    message: str,
    severity: str,
    data: dict[str, Any] | None,
    now: float,
) -> int:
    """Write one event (and its outbox row) inside the caller's transaction."""
    if severity not in SEVERITIES:
        raise StoreError(f"event severity must be one of {SEVERITIES}, got {severity!r}")
    seq = next_seq(c, "events")
    mono = time.monotonic()
    data_text = None if data is None else dumps(data)
    c.execute(
        "INSERT INTO events (seq, kind, severity, message, data, ts, mono) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (seq, kind, severity, message, data_text, now, mono),
    )
    outbox.append(
        c,
        RowKind.EVENT,
        {
            "seq": seq,
            "kind": kind,
            "severity": severity,
            "message": message,
            "data": data,
            "ts": now,
            "mono": mono,
        },
        now,
    )
    return seq


def since(c: sqlite3.Connection, after_seq: int | None = None, limit: int = 100) -> list[EventRow]:
    """Events after ``after_seq`` (oldest first); with ``None``, the newest ``limit``."""
    limit = max(0, min(int(limit), 10_000))
    if after_seq is None:
        found = rows(
            c,
            "SELECT * FROM (SELECT * FROM events ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            (limit,),
        )
    else:
        found = rows(
            c, "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (int(after_seq), limit)
        )
    return [
        EventRow(
            r["seq"],
            r["kind"],
            r["severity"],
            r["message"],
            loads(r["data"]),
            r["ts"],
            r["mono"],
        )
        for r in found
    ]


def last_seq(c: sqlite3.Connection) -> int:
    return int(rows(c, "SELECT max(seq) AS s FROM events")[0]["s"] or 0)


class EventsStore(StoreBase):
    def event(
        self,
        kind: str,
        message: str,
        *,
        severity: Severity = "info",
        data: dict[str, Any] | None = None,
    ) -> int:
        seq = self.write_now(append, kind, message, severity, data, time.time())
        log.log(
            logging.WARNING if severity in ("warning", "error") else logging.DEBUG,
            "event %s: %s",
            kind,
            message,
            extra={"device": self.device_id, "seq": seq},
        )
        return seq

    def events(self, after_seq: int | None = None, limit: int = 100) -> list[EventRow]:
        """Events after ``after_seq`` (oldest first); with ``None``, the newest ``limit``."""
        return self.read_now(since, after_seq, limit)

    def last_event_seq(self) -> int:
        return self.read_now(last_seq)
