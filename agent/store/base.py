"""What every part of the agent's store shares: the connection, its lock, transactions,
"disk full" bookkeeping and the small helpers the aggregate modules write rows with.

The aggregate modules (``identity``, ``events``, ``outbox``, ``journal``, ``deployments``,
``observed``, ``desired``, ``metrics``, ``retention``) hold their SQL as functions of a
connection; each adds its methods to ``agent.store.Store`` through a mixin of this base.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from agent.errors import StoreError, StoreFull
from agent.store import db as dbfile
from agent.store import space
from sbutil.sqlite import Database, rows
from sbutil.sqlite.database import Stage

log = logging.getLogger(__name__)

FULL_MEMORY = 30.0  # seconds a write that failed for lack of space keeps the store "full"

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="StoreBase")


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def store_error(exc: sqlite3.Error, prefix: str = "") -> StoreError:
    # SQLITE_FULL deserves words an operator acts on; the write was rolled back whole.
    if space.is_space_error(exc):
        return StoreFull(f"{prefix}disk full: the store could not write ({exc}); nothing was lost")
    return StoreError(f"{prefix}{exc}")


def bundle_ref(spec: Mapping[str, Any] | None) -> str | None:
    if not spec:
        return None
    name, version = spec.get("bundle"), spec.get("version")
    return f"{name}@{version}" if name and version else None


def next_seq(c: sqlite3.Connection, name: str) -> int:
    row = c.execute(
        "UPDATE sequences SET value = value + 1 WHERE name = ? RETURNING value", (name,)
    ).fetchone()
    if row is None:
        raise StoreError(f"sequence {name!r} missing")
    return int(row[0])


def meta_float(c: sqlite3.Connection, key: str) -> float | None:
    row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else float(row[0])


def set_meta(c: sqlite3.Connection, key: str, value: Any) -> None:
    c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))


class StoreBase:
    """The connection and its rules; see ``agent.store.Store`` for opening one."""

    def __init__(self, conn: sqlite3.Connection, path: Path, device_id: str) -> None:
        # The connection, its lock and transactions: the SQLite core both stores share.
        self._db = Database(conn, translate=self._translate, name="store")
        self.path = path
        self.device_id = device_id
        # Why the last write failed for lack of space, and when (None once a write
        # succeeds again). It counts for FULL_MEMORY seconds: statvfs cannot see a quota,
        # but a remembered failure must not outlive the space coming back when nothing
        # writes (the API refuses writes while the store counts as full).
        self.full_reason: str | None = None
        self._full_at = 0.0
        self._full_low = False  # whether free space was under the floor at that failure
        # Opened on a full disk with the WAL index in memory (db.connect_on_any_disk): the
        # file is ours alone until space returns and it is reopened normally.
        self._exclusive = dbfile.is_exclusive(conn)
        self._next_reopen = 0.0

    @property
    def _conn(self) -> sqlite3.Connection:
        return self._db.conn

    @property
    def _lock(self) -> threading.RLock:
        return self._db.lock

    def close(self) -> None:
        self._db.close()

    # ---------------------------------------------------------------- transactions

    _PREFIX: dict[Stage, str] = {
        "begin": "cannot begin a transaction: ",
        "write": "",
        "commit": "commit failed: ",
        "read": "",
    }

    def _translate(self, exc: sqlite3.Error, stage: Stage) -> StoreError:
        err = store_error(exc, self._PREFIX[stage])
        return err if stage == "read" else self._noted(err)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._db.lock:
            self._maybe_share()
            with self._db.transaction() as c:
                yield c
            if not self._db.depth:
                self.full_reason = None

    # ---------------------------------------------------------------- the thread rule

    async def read(self: S, fn: Callable[Concatenate[S, P], T], *args: P.args, **kw: P.kwargs) -> T:
        """``fn(store, ...)`` on the store's own worker thread: how code on an event loop
        reads (``await store.read(Store.events, after, limit)``). One thread, so calls run
        in the order they were made and the loop never waits on SQLite."""
        return await self._db.run(lambda: fn(self, *args, **kw))

    async def write(
        self: S, fn: Callable[Concatenate[S, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """``fn(store, ...)`` in one transaction on the store's worker thread: every store
        write it makes joins that transaction, so they commit together or not at all
        (``await store.write(Store.put_desired, desired)``)."""

        def run() -> T:
            with self._tx():
                return fn(self, *args, **kw)

        return await self._db.run(run)

    def write_now(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """``fn(connection, ...)`` in one write transaction, on the calling thread."""
        with self._tx() as c:
            return fn(c, *args, **kw)

    def read_now(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """``fn(connection, ...)`` under the lock, outside a write transaction."""
        return self._db.read_now(fn, *args, **kw)

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return self.read_now(rows, sql, params)

    def _noted(self, err: StoreError) -> StoreError:
        if isinstance(err, StoreFull):
            self.full_reason = str(err)
            self._full_at = time.monotonic()
            self._full_low = space.low_on_space(self.path.parent) is not None
        return err

    # ---------------------------------------------------------------- disk full

    def disk_full(self) -> str | None:
        """Why the store counts as full now, or None: free space under
        ``space.FLOOR_BYTES`` on its filesystem, or the last write failed for lack of space.
        The readiness probe reports it and the HTTP API refuses writes with it."""
        free = space.low_on_space(self.path.parent)
        if free is not None:
            return space.describe(self.path.parent, free)
        # Here the filesystem has room. A failure seen while it had none is over (space was
        # freed); one seen with room (a quota statvfs cannot see, a write bigger than the
        # floor) still counts for a while.
        if (
            self.full_reason is not None
            and not self._full_low
            and time.monotonic() - self._full_at < FULL_MEMORY
        ):
            return self.full_reason
        with self._lock:
            self._maybe_share(force=True)
        return None

    def _maybe_share(self, *, force: bool = False) -> None:
        """Reopen a store opened exclusively on a full disk once there is room again, so
        the CLI (status, apply) can use the file; tried at most every few seconds."""
        if not self._exclusive or (not force and time.monotonic() < self._next_reopen):
            return
        if self._db.depth:
            return  # never swap the connection under an open transaction
        self._next_reopen = time.monotonic() + 5.0
        if space.low_on_space(self.path.parent) is not None:
            return
        # The exclusive connection holds the file lock: it must go before a shared one can
        # read. If the shared open fails after all, the exclusive one comes back.
        self._db.conn.close()
        try:
            self._db.conn = dbfile.connect(self.path)
            self._exclusive = False
            log.info("store reopened for sharing: space is back", extra={"device": self.device_id})
        except sqlite3.Error:
            try:
                self._db.conn = dbfile.connect_on_any_disk(self.path)
            except sqlite3.Error as exc:
                raise store_error(exc, "cannot reopen the store: ") from exc
            self._exclusive = dbfile.is_exclusive(self._db.conn)

    def data_version(self) -> int:
        """Changes whenever another connection (e.g. ``signalbeam-agent apply``) commits."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
