"""The one detector of a desired-state change on the device.

Desired state is written by three kinds of writer, and each has its own way to say so; all
of them end here, in ``check``, which compares what the store answers now with what it
answered last and, on a change, tells the listeners (the reconcile loop among them):

- in-process writers (hub sync) call ``check`` after they store a revision;
- ``signalbeam-agent apply`` (another process) sends SIGUSR1, and the daemon calls ``check``;
- any other process's write is seen by ``run``, which polls SQLite's ``PRAGMA
  data_version`` (it changes when another connection commits) and calls ``check``.

The reconcile loop itself does not poll for a change: it reads the desired state at the
start of each run, which a listener (or its timer) asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from agent.errors import StoreError
from protocol.desired import DesiredState
from sbutil.tasks import wait_for

log = logging.getLogger(__name__)

Listener = Callable[[DesiredState | None, str], None]


def key_of(d: DesiredState | None) -> tuple[Any, ...] | None:
    """What makes two answers the same desired state."""
    return None if d is None else (d.source, d.generation, d.content_hash)


class DesiredWatch:
    def __init__(
        self,
        read: Callable[[], DesiredState | None],
        data_version: Callable[[], int],
        *,
        device_id: str,
    ) -> None:
        self._read = read
        self._data_version = data_version
        self._listeners: list[Listener] = []
        self._key: tuple[Any, ...] | None = None
        self._extra = {"device": device_id}

    def listen(self, listener: Listener) -> None:
        """``listener(desired, reason)`` on every change."""
        self._listeners.append(listener)

    def prime(self) -> None:
        """Take the stored state as known (at start: the loop's first run reads it anyway)."""
        self._key = key_of(self._read())

    def check(self, reason: str = "desired") -> bool:
        """Read the desired state; on a change tell the listeners. True when it changed."""
        current = self._read()
        key = key_of(current)
        if key == self._key:
            return False
        self._key = key
        log.info(
            "desired state changed: %s",
            "none" if current is None else f"{current.source} generation {current.generation}",
            extra=self._extra,
        )
        for listener in self._listeners:
            try:
                listener(current, reason)
            except Exception:
                log.exception("desired listener failed", extra=self._extra)
        return True

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        """Until ``stop``: every ``interval`` s, check when another connection committed."""
        version = self._data_version()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await wait_for(stop.wait(), interval)
                return
            try:
                now = self._data_version()
                if now != version:
                    version = now
                    self.check("desired")
            except StoreError:
                log.exception("desired watch failed", extra=self._extra)
