"""``DATA_DIR/agent.lock``: one running agent per store, and where to find its pid.

Kept apart from the daemon so the CLI (``status``, ``apply``'s nudge) can ask "is an agent
running, and which pid?" without importing asyncio.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from agent.errors import AgentError
from sbutil.private import private_dir


class AlreadyRunning(AgentError):
    pass


def acquire_lock(data_dir: Path) -> IO[str]:
    """Hold ``agent.lock`` for the process lifetime: two agents on one store would fight."""
    private_dir(data_dir)  # 0700: the store, tokens and credentials live here (issue 19)
    fh = open(data_dir / "agent.lock", "a+")  # noqa: SIM115 - held until the agent exits
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip()
        fh.close()
        raise AlreadyRunning(
            f"another agent (pid {pid or '?'}) is running with data dir {data_dir}"
        ) from None
    fh.seek(0)
    fh.truncate()
    try:
        # Straight to the fd: a failed buffered write would fail again at close().
        os.pwrite(fh.fileno(), str(os.getpid()).encode(), 0)
    except OSError:
        # A full disk: the lock (flock) is held all the same, only the pid cannot be shown
        # (running_pid then says -1, "running, pid unknown"). The agent must still start.
        with contextlib.suppress(OSError):
            os.ftruncate(fh.fileno(), 0)
    return fh


def running_pid(data_dir: Path) -> int | None:
    """The pid of the agent holding ``data_dir``'s lock, or None if none is running."""
    path = data_dir / "agent.lock"
    if not path.exists():
        return None
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = fh.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None
