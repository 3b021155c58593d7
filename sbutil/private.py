"""Files that hold secrets are owner-only from the moment they exist (issue 19).

The root fix is the process umask: ``restrict_umask()`` at the start of ``signalbeam-hub``
and ``signalbeam-agent`` makes every file and directory they create, and those their
children create (nats-server's JetStream store, litestream's replica, SQLite's ``-wal`` and
``-shm``), 0600/0700 without a chmod at each place that opens a file; a chmod after open
would leave a window, and SQLite creates its side files on its own. ``private_dir`` and
``private_db_files`` also tighten what an older version left (a data dir made 0755, a DB
0644) and hold when the code runs in a process that did not set the umask (tests, tools):
SQLite gives ``-wal``/``-shm`` the main file's mode, so creating the DB file 0600 before
SQLite opens it is enough for all three.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
DB_SIDE_FILES = ("-wal", "-shm", "-journal")


def restrict_umask() -> int:
    """Owner-only for everything this process (and its children) creates; the old umask."""
    return os.umask(PRIVATE_UMASK)


def _tighten(path: Path, mode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        st = path.stat()
        if stat.S_IMODE(st.st_mode) & ~mode:
            os.chmod(path, stat.S_IMODE(st.st_mode) & mode)


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) a directory only its owner can enter; an existing
    one loses group and other bits."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    _tighten(path, 0o700)
    return path


def private_db_files(db: Path) -> None:
    """Create the SQLite file 0600 if missing (its WAL and SHM then get the same mode) and
    take group/other bits off it and any side file an older version left readable.
    SQLite's in-memory database has no file: creating one named ``:memory:`` in the working
    directory would leave litter (a test run did, in the repository root)."""
    if str(db) == ":memory:":
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for path in (db, *(db.with_name(db.name + s) for s in DB_SIDE_FILES)):
        _tighten(path, 0o600)
