"""Update locks held through the local API, and the gate state the device reports.

An aggregate like the others (its SQL as functions of a connection): the lock rows, their
audit events and the ``gate`` report rows, each change committed with its event and its
outbox row. Kept out of the ``Store`` facade: only the HTTP API and the update gate
(``agent.updategate``) use it, through the module-level wrappers at the end.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, cast

from agent.reconcile.gates import Lock
from agent.store import events, outbox
from agent.store.base import StoreBase, rows
from protocol.reported import GatePayload, RowKind

GATE_META = "gate_reported"  # the last gate document queued for the hub (without its ts)
MAX_WHO = 64
MAX_REASON = 256


def hold_sql(c: sqlite3.Connection, who: str, reason: str | None, actor: str) -> tuple[Lock, bool]:
    now = time.time()
    row = c.execute("SELECT since FROM update_locks WHERE who = ?", (who,)).fetchone()
    since = now if row is None else float(row[0])
    c.execute(
        "INSERT OR REPLACE INTO update_locks (who, reason, since, actor) VALUES (?, ?, ?, ?)",
        (who, reason, since, actor),
    )
    if row is None:
        events.append(
            c,
            "update_lock.held",
            f"update lock taken by {who}" + (f": {reason}" if reason else ""),
            "info",
            {"who": who, "reason": reason, "actor": actor, "via": "api"},
            now,
        )
    return Lock(who, since, "api"), row is None


def release_sql(c: sqlite3.Connection, who: str, actor: str) -> Lock | None:
    now = time.time()
    row = c.execute("SELECT since FROM update_locks WHERE who = ?", (who,)).fetchone()
    if row is None:
        return None
    c.execute("DELETE FROM update_locks WHERE who = ?", (who,))
    events.append(
        c,
        "update_lock.released",
        f"update lock of {who} released",
        "info",
        {"who": who, "actor": actor, "via": "api", "held_for": round(now - row[0], 3)},
        now,
    )
    return Lock(who, float(row[0]), "api")


def held_sql(c: sqlite3.Connection) -> list[Lock]:
    found = rows(c, "SELECT who, since FROM update_locks ORDER BY since, who")
    return [Lock(r["who"], float(r["since"]), "api") for r in found]


def _same_as(doc: dict[str, Any]) -> str:
    """What makes two gate documents "the same" for the hub: not the locks' times (an app
    that touches its lock file to keep it fresh must not send a row per touch)."""
    key = {k: v for k, v in doc.items() if k not in ("reason", "locks")}
    key["holders"] = sorted(
        (str(lk.get("who")), str(lk.get("source"))) for lk in doc.get("locks") or ()
    )
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def report_gate_sql(c: sqlite3.Connection, doc: dict[str, Any]) -> bool:
    now = time.time()
    row = c.execute("SELECT value FROM meta WHERE key = ?", (GATE_META,)).fetchone()
    last = json.loads(row[0]) if row is not None else None
    if isinstance(last, dict) and _same_as(last) == _same_as(doc):
        return False
    if doc.get("state") == "clear" and (not isinstance(last, dict) or last.get("state") == "clear"):
        return False  # nothing was deferred: "clear" would only tell the hub what it knows
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (GATE_META, text))
    outbox.append(c, RowKind.GATE, cast(GatePayload, {**doc, "ts": now}), now)
    if doc.get("state") == "deferred":
        events.append(
            c,
            "update.deferred",
            f"{doc.get('bundle_ref') or 'update'} deferred: {doc.get('reason')}",
            "info",
            {k: doc.get(k) for k in ("generation", "bundle_ref", "kind", "reason", "until")},
            now,
        )
    return True


def last_gate_sql(c: sqlite3.Connection) -> dict[str, Any] | None:
    row = c.execute("SELECT value FROM meta WHERE key = ?", (GATE_META,)).fetchone()
    doc = None if row is None else json.loads(row[0])
    return doc if isinstance(doc, dict) else None


# -- over a store ---------------------------------------------------------------------------
def hold(store: StoreBase, who: str, reason: str | None, actor: str) -> tuple[Lock, bool]:
    """Take (or refresh the reason of) ``who``'s lock; audited. Returns (lock, new)."""
    return store.write_now(hold_sql, who, reason, actor)


def release(store: StoreBase, who: str, actor: str) -> Lock | None:
    """Release ``who``'s lock; audited. None when ``who`` held none."""
    return store.write_now(release_sql, who, actor)


def held(store: StoreBase) -> list[Lock]:
    return store.read_now(held_sql)


def report_gate(store: StoreBase, doc: dict[str, Any]) -> bool:
    """Queue ``doc`` (the gate's state) for the hub as a ``gate`` reported part, with an event
    when a deferral starts or changes; nothing when it equals the last one queued (a
    deferral re-checked every second must not flood the outbox). Returns whether queued."""
    return store.write_now(report_gate_sql, doc)


def last_gate(store: StoreBase) -> dict[str, Any] | None:
    return store.read_now(last_gate_sql)


__all__ = ["MAX_REASON", "MAX_WHO", "held", "hold", "last_gate", "release", "report_gate"]
