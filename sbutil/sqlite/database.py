"""One connection, the rule for using it, and transactions.

The rule: every use of the connection holds the ``Database``'s lock, and code on an event
loop never runs SQL itself: it awaits ``read(fn)`` / ``write(fn)``, which run ``fn(conn,
...)`` on the database's own worker thread (one thread, so calls run in the order they were
made, as datasette's ``Database.execute_write_fn``). Code with no event loop (CLI tools,
tests, the worker itself) calls ``read_now`` / ``write_now`` on its own thread. A
``write`` is one ``BEGIN IMMEDIATE`` transaction; writes inside it join it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Concatenate, Literal, ParamSpec, TypeVar

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

Stage = Literal["begin", "write", "commit", "read"]
# Turns a SQLite error at a stage into what the caller raises (each side's own exception
# tree and words); None raises the SQLite error itself.
Translate = Callable[[sqlite3.Error, Stage], BaseException]


class Database:
    def __init__(
        self, conn: sqlite3.Connection, *, translate: Translate | None = None, name: str = "db"
    ) -> None:
        self.conn = conn
        self.lock = threading.RLock()
        self.depth = 0  # open transaction levels: nested writes join the outer one
        self._translate = translate
        self._name = name
        self._worker: ThreadPoolExecutor | None = None
        self._worker_lock = threading.Lock()

    # ---------------------------------------------------------------- transactions

    def _error(self, exc: sqlite3.Error, stage: Stage) -> BaseException:
        return exc if self._translate is None else self._translate(exc, stage)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; nested uses join the outer one.

        BEGIN IMMEDIATE takes the write lock up front so a read-then-write inside cannot
        fail half way with SQLITE_BUSY.
        """
        with self.lock:
            if self.depth:
                self.depth += 1
                try:
                    yield self.conn
                finally:
                    self.depth -= 1
                return
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc, "begin") from exc
            self.depth = 1
            try:
                yield self.conn
            except BaseException as exc:
                self.depth = 0
                self._rollback()
                if isinstance(exc, sqlite3.Error) and self._translate is not None:
                    raise self._error(exc, "write") from exc
                raise
            self.depth = 0
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise self._error(exc, "commit") from exc

    def _rollback(self) -> None:
        # SQLite rolls back by itself on some errors (SQLITE_FULL, SQLITE_IOERR, ...); a
        # second ROLLBACK would then raise and hide the real error.
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed")

    # ---------------------------------------------------------------- on this thread

    def write_now(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """``fn(conn, ...)`` in one write transaction, on the calling thread."""
        with self.transaction() as c:
            return fn(c, *args, **kw)

    def read_now(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """``fn(conn, ...)`` under the lock, outside a write transaction (or inside the one
        this thread has open), on the calling thread."""
        with self.lock:
            try:
                return fn(self.conn, *args, **kw)
            except sqlite3.Error as exc:
                if self._translate is None:
                    raise
                raise self._error(exc, "read") from exc

    # ---------------------------------------------------------------- from an event loop

    def _executor(self) -> ThreadPoolExecutor:
        with self._worker_lock:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
            return self._worker

    async def run(self, fn: Callable[P, T], *args: P.args, **kw: P.kwargs) -> T:
        """``fn(...)`` on the worker thread (for a call that takes the lock itself)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), partial(fn, *args, **kw))

    async def write(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """``write_now(fn, ...)`` on the worker thread."""
        return await self.run(lambda: self.write_now(fn, *args, **kw))

    async def read(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """``read_now(fn, ...)`` on the worker thread."""
        return await self.run(lambda: self.read_now(fn, *args, **kw))

    def close(self) -> None:
        """Finish queued calls, stop the worker, close the connection."""
        with self._worker_lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=True)
        with self.lock:
            self.conn.close()
