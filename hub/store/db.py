"""Opening the hub database: WAL, busy timeout, foreign keys, migrations applied."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from hub.store.migrations import migrate
from sbutil.private import private_db_files

BUSY_TIMEOUT_MS = 5000


def open_db(path: Path | str) -> sqlite_utils.Database:
    # check_same_thread=False: the hub runs every store call on one dedicated worker thread
    # (the single writer), which is not the thread that opened the connection.
    # 0600 before SQLite opens it: its -wal and -shm get the same mode (issue 19).
    private_db_files(Path(path))
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL is safe in WAL mode (a crash may lose the last commits, never corrupts), and
    # litestream recommends it.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    db = sqlite_utils.Database(conn)
    migrate(db)
    return db
