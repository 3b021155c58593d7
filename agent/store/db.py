"""Opening the agent's SQLite file: WAL settings, corruption detection, moving a bad file aside.

Kept apart from the domain methods so the crash-safety rules live in one small module.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import StoreCorrupt, StoreError, StoreFull
from agent.store import space
from sbutil import sqlite

log = logging.getLogger(__name__)

# Error codes that mean "this file is not a healthy database", as opposed to "busy" or
# "locked", which are someone else holding the write lock and must never trigger a move.
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


@dataclass(frozen=True)
class Recovery:
    moved_to: Path
    error: str


def connect(path: Path, *, exclusive: bool = False) -> sqlite3.Connection:
    """Open ``path`` in WAL mode (``sbutil.sqlite.connect``).

    ``exclusive`` sets ``locking_mode=EXCLUSIVE`` before the first access, so SQLite keeps
    the WAL index in process memory instead of a ``-shm`` file: the way to open a store on
    a full disk, where that file cannot be created (after a clean stop SQLite deletes it).
    Other processes then cannot use the file until the agent reopens it normally.
    """
    # SQLite's page cache is the agent's only memory that grows with the file (2 MiB by
    # default, filled over hours as metrics accrue; the soak bench saw it as RSS growth).
    # 1 MiB bounds it lower; pages beyond it come from the kernel's page cache. Not being
    # able to switch to WAL is an OperationalError: open_checked words it as a StoreError.
    return sqlite.connect(path, exclusive=exclusive, cache_kib=1024, require_wal=True)


def is_corruption(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _CORRUPT_CODES
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text


def check(conn: sqlite3.Connection) -> None:
    """Raise ``StoreCorrupt`` unless ``PRAGMA quick_check`` says ok."""
    rows = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    if rows != ["ok"]:
        raise StoreCorrupt("quick_check failed: " + "; ".join(map(str, rows[:5])))


def move_aside(path: Path, now: float | None = None) -> Path:
    """Rename the database (and its WAL/SHM files) to ``<name>.corrupt-<ts>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    return target


def is_exclusive(conn: sqlite3.Connection) -> bool:
    return str(conn.execute("PRAGMA locking_mode").fetchone()[0]).lower() == "exclusive"


def connect_on_any_disk(path: Path) -> sqlite3.Connection:
    """``connect``, falling back to ``exclusive`` when the disk is too full for a ``-shm``.

    Without the fallback, starting on a full disk depended on the files a previous run
    left: after a kill the WAL index exists and the open works, after a clean stop it must
    be created and the open fails. With it, an existing store always opens (reads work;
    writes fail as "disk full" until space is freed).
    """
    try:
        return connect(path)
    except sqlite3.OperationalError as exc:
        free = space.low_on_space(path.parent)
        if free is None or not (space.is_io_error(exc) or space.is_space_error(exc)):
            raise
        log.warning(
            "%s; opening %s with the WAL index in memory (other processes cannot use the "
            "file until space is freed)",
            space.describe(path.parent, free),
            path,
        )
        return connect(path, exclusive=True)


def open_error(path: Path, exc: BaseException) -> StoreError:
    """Why ``path`` could not be opened; "disk full" (``StoreFull``) when that is why."""
    free = space.low_on_space(path.parent)
    if free is not None or space.is_space_error(exc):
        where = space.describe(path.parent, free) if free is not None else "disk full"
        return StoreFull(f"{path}: {where} ({exc})")
    return StoreError(f"{path}: {exc}")


def open_checked(path: Path, *, recover: bool) -> tuple[sqlite3.Connection, Recovery | None]:
    """Connect and verify the file; if corrupt, move it aside (when ``recover``) and start fresh."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = connect_on_any_disk(path)
    except sqlite3.DatabaseError as exc:
        if not is_corruption(exc):
            raise open_error(path, exc) from exc
        return _recover(path, str(exc), recover)
    if not recover:
        # Tools beside a running agent (status, apply) skip the full-file scan (about 90 ms
        # on a week of rollups); damage still surfaces as an error on the pages they read.
        return conn, None
    try:
        check(conn)
    except (StoreCorrupt, sqlite3.DatabaseError) as exc:
        conn.close()
        if isinstance(exc, sqlite3.DatabaseError) and not is_corruption(exc):
            raise open_error(path, exc) from exc
        return _recover(path, str(exc), recover)
    return conn, None


def _recover(path: Path, error: str, recover: bool) -> tuple[sqlite3.Connection, Recovery]:
    if not recover:
        raise StoreCorrupt(f"{path}: {error}")
    moved = move_aside(path)
    log.error(
        "store file was corrupt; moved aside and starting fresh", extra={"moved_to": str(moved)}
    )
    return connect(path), Recovery(moved, error)


def salvage_desired(path: Path) -> list[dict[str, Any]]:
    """Best effort: the desired revisions that were in effect in a corrupt file.

    A damaged file often still has readable pages; the small desired-state table is the one
    thing worth rescuing, because without it the device has nothing to converge to until
    the hub (or a field tech) speaks again. Any failure just means nothing is salvaged.
    """
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return []
    try:
        conn.row_factory = sqlite3.Row
        hub = conn.execute(
            # *: the update-gate columns (migration 3) where the file has them
            "SELECT * FROM desired_revisions WHERE source = 'hub' ORDER BY generation DESC LIMIT 1"
        ).fetchall()
        local = conn.execute(
            "SELECT * FROM desired_revisions "
            "WHERE source = 'local' AND cleared_at IS NULL ORDER BY id DESC LIMIT 1"
        ).fetchall()
        return [dict(r) for r in [*hub, *local]]
    except sqlite3.Error:
        return []
    finally:
        conn.close()
