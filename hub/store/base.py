"""What every part of the store shares: the connection, transactions, row helpers.

The connection, its lock and transactions are the SQLite core the agent shares
(``sbutil.sqlite.Database``); this adds the hub's ``sqlite_utils`` view of the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlite_utils

from sbutil import sqlite


class StoreBase:
    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self.database = sqlite.Database(db.conn, name="store")

    @property
    def conn(self) -> sqlite3.Connection:
        return self.database.conn

    @property
    def _depth(self) -> int:
        """Open transaction levels (0: none): a dry run must own its transaction."""
        return self.database.depth

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; nested uses join the outer one (``Database.transaction``)."""
        with self.database.transaction() as c:
            yield c

    def rows(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        return sqlite.rows(self.conn, sql, params)

    def row(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> dict[str, Any] | None:
        return sqlite.row(self.conn, sql, params)

    def scalar(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> Any:
        return sqlite.scalar(self.conn, sql, params)
