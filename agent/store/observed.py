"""The snapshot of observed containers; an ``observed`` outbox row only when it changed."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from typing import Any

from agent.store import outbox
from agent.store.base import StoreBase, dumps, rows
from protocol.reported import RowKind


def save(c: sqlite3.Connection, containers: list[dict[str, Any]]) -> None:
    """Replace the snapshot; an outbox row is written only when it actually changed."""
    ordered = sorted(containers, key=lambda d: str(d.get("name", "")))
    text = dumps(ordered)
    digest = hashlib.sha256(text.encode()).hexdigest()
    now = time.time()
    row = c.execute("SELECT value FROM meta WHERE key = 'observed_hash'").fetchone()
    if row is not None and row[0] == digest:
        return
    c.execute("DELETE FROM observed_containers")
    c.executemany(
        "INSERT INTO observed_containers (position, name, data, updated_at) VALUES (?, ?, ?, ?)",
        [(i, d.get("name"), dumps(d), now) for i, d in enumerate(ordered)],
    )
    c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('observed_hash', ?)", (digest,))
    outbox.append(c, RowKind.OBSERVED, {"containers": ordered, "ts": now}, now)


def snapshot(c: sqlite3.Connection) -> list[dict[str, Any]]:
    found = rows(c, "SELECT data FROM observed_containers ORDER BY position")
    return [json.loads(r["data"]) for r in found]


class ObservedStore(StoreBase):
    def save_observed(self, containers: list[dict[str, Any]]) -> None:
        """Replace the snapshot; an outbox row is written only when it actually changed."""
        self.write_now(save, containers)

    def observed(self) -> list[dict[str, Any]]:
        return self.read_now(snapshot)
