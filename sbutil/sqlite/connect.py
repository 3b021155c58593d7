"""Opening a SQLite file the way both stores want it, and reading rows as dicts."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from sbutil.private import private_db_files

BUSY_TIMEOUT_MS = 5000

Params = tuple[Any, ...] | list[Any]


def connect(
    path: Path | str,
    *,
    exclusive: bool = False,
    cache_kib: int | None = None,
    require_wal: bool = True,
    private_strict: bool = False,
) -> sqlite3.Connection:
    """Open ``path`` in WAL mode with ``synchronous=NORMAL``, foreign keys on and a 5 s busy
    timeout, in autocommit mode: callers issue ``BEGIN IMMEDIATE`` / ``COMMIT`` themselves
    (``Database.transaction``), so a transaction spans exactly what it means to and nothing
    commits behind their back.

    ``exclusive`` sets ``locking_mode=EXCLUSIVE`` before the first access, so SQLite keeps
    the WAL index in process memory instead of a ``-shm`` file (the agent's way to open on a
    full disk). ``cache_kib`` bounds SQLite's page cache (default: SQLite's 2 MiB).
    ``require_wal`` raises ``sqlite3.OperationalError`` if WAL mode could not be set.
    The file is made 0600 before SQLite opens it, so its ``-wal`` and ``-shm`` are too
    (issue 19); ``private_strict`` raises if that fails, otherwise SQLite's own open says
    what is wrong (a disk too full to create the file).
    """
    # check_same_thread=False: a connection is used by one thread at a time (the store's
    # lock or its worker thread), which need not be the thread that opened it.
    if private_strict:
        private_db_files(Path(path))
    else:
        with contextlib.suppress(OSError):
            private_db_files(Path(path))
    conn = sqlite3.connect(
        str(path),
        isolation_level=None,
        check_same_thread=False,
        timeout=BUSY_TIMEOUT_MS / 1000,
    )
    try:
        if exclusive:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if require_wal and str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch to WAL mode (got {mode!r})")
        # NORMAL in WAL mode survives any process crash (kill -9); only a power cut can lose
        # the last few commits, never corrupt the file. litestream recommends it too.
        conn.execute("PRAGMA synchronous=NORMAL")
        if cache_kib is not None:
            conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def rows(c: sqlite3.Connection, sql: str, params: Params = ()) -> list[dict[str, Any]]:
    cur = c.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def row(c: sqlite3.Connection, sql: str, params: Params = ()) -> dict[str, Any] | None:
    found = rows(c, sql, params)
    return found[0] if found else None


def scalar(c: sqlite3.Connection, sql: str, params: Params = ()) -> Any:
    r = c.execute(sql, params).fetchone()
    return None if r is None else r[0]
