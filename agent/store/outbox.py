"""The transactional outbox: every state change and event writes its upstream row in the
same transaction, numbered from the ``sequences`` table, so a crash can neither lose a
delta nor number one twice. The sync task drains it (``pending`` / ``mark_sent``)."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from agent.store.base import StoreBase, dumps, next_seq, rows
from agent.store.rows import OutboxRow
from protocol.reported import RowKind, RowPayload


def append(c: sqlite3.Connection, kind: RowKind, payload: RowPayload, now: float) -> int:
    """Write one outbox row inside the caller's transaction; returns its sequence number.
    ``kind`` and the payload's shape are the wire contract (``protocol.reported``)."""
    text = dumps(payload)
    seq = next_seq(c, "outbox")
    c.execute(
        "INSERT INTO outbox (seq, kind, payload, size, created_at) VALUES (?, ?, ?, ?, ?)",
        (seq, kind.value, text, len(text.encode()), now),
    )
    return seq


def pending(c: sqlite3.Connection, limit: int = 100, max_bytes: int = 1_000_000) -> list[OutboxRow]:
    """The oldest unsent rows, in sequence order, within ``limit`` rows and ``max_bytes``
    of payload (at least one row, so a large row cannot block the queue)."""
    found = rows(
        c,
        "SELECT seq, kind, payload, size, created_at FROM outbox WHERE sent_at IS NULL "
        "ORDER BY seq LIMIT ?",
        (max(1, int(limit)),),
    )
    out: list[OutboxRow] = []
    total = 0
    for r in found:
        if out and total + r["size"] > max_bytes:
            break
        total += r["size"]
        out.append(OutboxRow(r["seq"], r["kind"], r["payload"], r["size"], r["created_at"]))
    return out


def epoch(c: sqlite3.Connection) -> str | None:
    """This store's outbox epoch (``identity.sync_epoch``); None for a store made by an
    agent from before epochs (its numbering never started again)."""
    found = rows(c, "SELECT value FROM identity WHERE key = 'sync_epoch'")
    return str(found[0]["value"]) if found else None


def mark_sent(c: sqlite3.Connection, up_to_seq: int) -> int:
    """Mark every unsent row with ``seq <= up_to_seq`` sent; returns how many."""
    cur = c.execute(
        "UPDATE outbox SET sent_at = ? WHERE sent_at IS NULL AND seq <= ?",
        (time.time(), int(up_to_seq)),
    )
    return cur.rowcount


def depth(c: sqlite3.Connection) -> int:
    return int(rows(c, "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL")[0]["n"])


def stats(c: sqlite3.Connection) -> dict[str, Any]:
    # One statement, so one snapshot: the heartbeat sends ``pending`` and ``last_seq``,
    # and the hub takes "nothing pending up to last_seq" as the device's word that every
    # row up to there reached the stream (a row committed between two reads would make
    # that claim false).
    r = rows(
        c,
        "SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes, min(created_at) AS oldest, "
        "min(seq) AS first_seq, max(seq) AS last_seq, "
        "(SELECT value FROM sequences WHERE name = 'outbox') AS counter "
        "FROM outbox WHERE sent_at IS NULL",
    )[0]
    return {
        "pending": r["n"],
        "bytes": r["bytes"],
        "oldest_created_at": r["oldest"],
        "first_pending_seq": r["first_seq"],
        "last_pending_seq": r["last_seq"],
        "last_seq": int(r["counter"] or 0),
    }


class OutboxStore(StoreBase):
    def outbox_pending(self, limit: int = 100, max_bytes: int = 1_000_000) -> list[OutboxRow]:
        return self.read_now(pending, limit, max_bytes)

    def outbox_epoch(self) -> str | None:
        return self.read_now(epoch)

    def outbox_mark_sent(self, up_to_seq: int) -> int:
        return self.write_now(mark_sent, up_to_seq)

    def outbox_depth(self) -> int:
        return self.read_now(depth)

    def outbox_stats(self) -> dict[str, Any]:
        return self.read_now(stats)
