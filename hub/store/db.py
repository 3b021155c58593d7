"""Opening the hub database: WAL, busy timeout, foreign keys, migrations applied."""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

from hub.store.migrations import migrate
from sbutil import sqlite


def open_db(path: Path | str) -> sqlite_utils.Database:
    # The pragmas are the agent's too (sbutil.sqlite.connect). The file is made 0600 first
    # (issue 19), and a failure to do so stops the hub there. The hub's page cache keeps
    # SQLite's default size, and a file that cannot be in WAL mode still opens.
    conn = sqlite.connect(path, require_wal=False, private_strict=True)
    db = sqlite_utils.Database(conn)
    migrate(db)
    return db
