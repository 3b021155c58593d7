"""Who this store belongs to: the device id, the store's own id and its outbox epoch, and
the sequence counters a new store starts from."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from agent.errors import ConfigError, StoreError
from agent.store.base import StoreBase, rows


def init(
    c: sqlite3.Connection,
    path: Path,
    device_id: str | None,
    adopt_stored_id: bool,
    fresh_sequences: bool,
) -> str:
    """Record ``device_id`` in a new store, or check it against the stored one; returns the
    device id the store belongs to."""
    now = time.time()
    row = c.execute("SELECT value FROM identity WHERE key='device_id'").fetchone()
    stored = row[0] if row else None
    if stored is None:
        if not device_id:
            raise StoreError(f"{path}: store has no device id yet and none was given")
        c.executemany(
            "INSERT INTO identity (key, value) VALUES (?, ?)",
            [
                ("device_id", device_id),
                ("store_id", os.urandom(16).hex()),
                # The outbox numbering's name, sent with every report: a store made
                # again (this file deleted or emptied) numbers from 1 under a new
                # epoch, which the hub applies as new rows instead of replays. A
                # store made by an older agent has none and keeps its one numbering.
                ("sync_epoch", os.urandom(12).hex()),
                ("created_at", repr(now)),
            ],
        )
        # A store recreated after corruption must not reuse numbers the hub has
        # already applied (it would drop the new rows as duplicates), so it starts
        # at wall-clock milliseconds, far above any count the old file could reach.
        # A moved-aside file next to us means the same, even if we were killed
        # between moving it and getting here.
        previous_life = fresh_sequences or any(path.parent.glob(path.name + ".corrupt-*"))
        base = int(now * 1000) if previous_life else 0
        c.executemany(
            "INSERT OR IGNORE INTO sequences (name, value) VALUES (?, ?)",
            [("outbox", base), ("events", base)],
        )
        return device_id
    if device_id and stored != device_id and not adopt_stored_id:
        raise ConfigError(
            "device_id",
            f"the store at {path} belongs to device {stored!r}, not {device_id!r}",
        )
    return str(stored)


def read(c: sqlite3.Connection) -> dict[str, str]:
    return {r["key"]: r["value"] for r in rows(c, "SELECT key, value FROM identity")}


class IdentityStore(StoreBase):
    def identity(self) -> dict[str, str]:
        return self.read_now(read)
