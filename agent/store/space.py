"""Free space where the agent writes, and telling "the disk is full" apart from other errors.

The agent's writes all land in its data dir (the store, its WAL, the token file). When that
filesystem is full, SQLite fails writes with SQLITE_FULL, and opening a database whose WAL
index (``-shm``) must be created fails with a disk I/O error instead. Both mean the same
thing to an operator, and both are told as "disk full" with the free space measured here.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import Any

# Below this much free space the data dir counts as full: a write transaction (a page or
# ten, a WAL frame each, a bundle document of up to 256 KiB) no longer reliably fits, and
# what is left is better kept for the agent's own records than spent on API writes.
FLOOR_BYTES = 1024 * 1024

SQLITE_IOERR = 10
SQLITE_FULL = 13
_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def free_bytes(path: Path) -> int:
    """Bytes this process may still write on the filesystem holding ``path``.

    Root may use the blocks a filesystem reserves (ext4's 5 %), others may not.
    """
    st = os.statvfs(path)
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return int(blocks * st.f_frsize)


def low_on_space(path: Path) -> int | None:
    """The free bytes at ``path`` when under ``FLOOR_BYTES``; None when there is room (or
    when the filesystem cannot be asked: never claim "full" without knowing)."""
    try:
        free = free_bytes(path)
    except OSError:
        return None
    return free if free < FLOOR_BYTES else None


def is_space_error(exc: BaseException | None) -> bool:
    """True if ``exc`` (or what caused it) is SQLITE_FULL, ENOSPC or EDQUOT."""
    seen = 0
    while exc is not None and seen < 10:
        code = getattr(exc, "sqlite_errorcode", 0) or 0
        if isinstance(exc, sqlite3.Error) and code & 0xFF == SQLITE_FULL:
            return True
        if isinstance(exc, OSError) and exc.errno in _SPACE_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def is_io_error(exc: BaseException) -> bool:
    """SQLITE_IOERR (any extended code): what creating a WAL index on a full disk gives."""
    return (
        isinstance(exc, sqlite3.Error)
        and (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == SQLITE_IOERR
    )


def describe(path: Path, free: int) -> str:
    return (
        f"disk full: {free} bytes free on the filesystem holding {path} "
        f"(the agent needs at least {FLOOR_BYTES // 1024} KiB); free space there"
    )


def state(path: Path, full_reason: str | None) -> dict[str, Any]:
    """The disk as status views show it (``/v1/status``, its page, ``signalbeam-agent
    status``): ``full`` with the reason readiness and the 507s give, and the free bytes
    (None when the filesystem cannot be asked)."""
    try:
        free: int | None = free_bytes(path)
    except OSError:
        free = None
    return {"full": full_reason is not None, "reason": full_reason, "free_bytes": free}


def describe_state(disk: dict[str, Any] | None) -> str:
    """One line for the page and the CLI: the reason when full, else the free space."""
    if not disk:
        return "unknown"
    if disk.get("full"):
        return str(disk.get("reason") or "disk full")
    free = disk.get("free_bytes")
    if not isinstance(free, int):
        return "ok"
    if free >= 1 << 30:
        return f"ok, {free / (1 << 30):.1f} GiB free"
    return f"ok, {free / (1 << 20):.1f} MiB free"
