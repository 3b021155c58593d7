"""Coalesced ``devices``/``updated`` change notices.

Ingest applies reports and presence flips devices online/offline many times a second on a
big fleet; a live view wants to know *which* devices to reload, not one message per event.
``IdCoalescer`` (pure) gathers ids; ``DeviceNotices`` publishes what gathered at most once per
``interval`` seconds: the first change after a quiet spell goes out at once, later ones wait
for the window to end. Past ``limit`` ids in one window the notice says ``ids: null``
("many changed, reload").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from sbutil.tasks import cancel_and_wait

log = logging.getLogger(__name__)

INTERVAL = 0.5
MAX_IDS = 500

Send = Callable[[list[str] | None], Awaitable[None]]


class IdCoalescer:
    def __init__(self, limit: int = MAX_IDS) -> None:
        self.limit = limit
        self._ids: set[str] = set()
        self._overflow = False
        self.pending = False

    def add(self, ids: Iterable[str]) -> None:
        if not self._overflow:
            self._ids.update(ids)
            if len(self._ids) > self.limit:
                self._overflow, self._ids = True, set()
        self.pending = True

    def take(self) -> list[str] | None:
        """The ids gathered since the last take (sorted), or None after an overflow."""
        out = None if self._overflow else sorted(self._ids)
        self._ids, self._overflow, self.pending = set(), False, False
        return out


class DeviceNotices:
    def __init__(
        self,
        send: Send,
        interval: float = INTERVAL,
        limit: int = MAX_IDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send = send
        self.interval = interval
        self.clock = clock
        self.ids = IdCoalescer(limit)
        self._last = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def changed(self, ids: Iterable[str]) -> None:
        """Note changed devices; a notice follows within ``interval`` seconds."""
        ids = list(ids)
        if not ids:
            return
        self.ids.add(ids)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="device-notices")

    async def _run(self) -> None:
        # No await between the last pending check and the task ending, so a change noted
        # after it starts a new task and is never stranded.
        while self.ids.pending:
            delay = self._last + self.interval - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            ids = self.ids.take()
            self._last = self.clock()
            try:
                await self.send(ids)
            except Exception:
                log.warning("could not publish the devices/updated notice", exc_info=True)

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
