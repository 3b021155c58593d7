"""The sync service's status: the document ``status`` shows and the file a running agent
rewrites for other processes (read by agent.sync.status).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from agent.sync.link_watch import LinkWatchPart
from agent.sync.liveness import unreachable_since
from protocol import natsauth

# One logger name for all of the service's records, as before it was split into modules.
log = logging.getLogger("agent.sync.service")


class StatusPart(LinkWatchPart):
    """The status document and the status file (see the module's docstring)."""

    async def current_status(self) -> dict[str, Any]:
        """``status()`` with the outbox depth read from the store (on its own thread)."""
        return self.status(await self._outbox_pending())

    def status(self, outbox_pending: int | None = None) -> dict[str, Any]:
        """For ``signalbeam-agent status`` and the HTTP API. ``online`` and ``last_contact``
        are end to end: the hub's last answer (``agent.sync.liveness``). ``outbox_pending``
        is the caller's (``current_status`` reads it); this reads no store."""
        hb = self.heartbeat
        return {
            "mode": self.settings.mode,
            **self.link.to_dict(),
            "unreachable_since": unreachable_since(
                self.link.online, self.link.last_contact, self.started_at
            ),
            "heartbeat_interval": self.settings.heartbeat_interval
            if hb is None
            else hb.current_interval,
            "stale_after": self._stale_after(),
            "leaf": None
            if self.leaf is None
            else {"url": self.leaf.url, "pid": self.leaf.pid, "restarts": self.leaf.restarts},
            "uplink": None if self.uplink is None else self.uplink.stats.to_dict(),
            "outbox_pending": outbox_pending,
            "downlink": None if self.downlink is None else self.downlink.stats.to_dict(),
            "signing": None if self.intake is None else self.intake.status(),
            "heartbeats_sent": 0 if hb is None else hb.sent,
            "heartbeats_answered": 0 if hb is None else hb.acked,
            "heartbeats_unanswered": 0 if hb is None else hb.unanswered,
            "rpc": {} if self.rpc is None else dict(self.rpc.counts),
            "auth": "password"
            if self.renewer is None
            else {
                "mode": "jwt",
                "expires": natsauth.expiry(self.renewer.jwt),
                "renewed": self.renewer.renewed,
                "renew_failures": self.renewer.failures,
            },
            "metered": {**self.pacing.to_dict(), "bytes_day": self.usage.last_day()},
        }

    async def _persist_status(self) -> None:
        """Write the status file on every online/offline change and every status_every s
        (not on every contact: this may be an SD card)."""
        assert self.settings.status_path is not None
        written: tuple[bool, int] | None = None
        last = 0.0
        while True:
            key = (self.link.online, self.link.epoch)
            if key != written or time.monotonic() - last >= self.settings.status_every:
                try:
                    doc = await self.current_status()
                    await asyncio.to_thread(self._write_status, self.settings.status_path, doc)
                    written, last = key, time.monotonic()
                except OSError as exc:
                    log.warning(
                        "cannot write %s: %s", self.settings.status_path, exc, extra=self._extra
                    )
            await asyncio.sleep(0.5)

    @staticmethod
    def _write_status(path: Path, status: dict[str, Any]) -> None:
        doc = {**status, "written_at": time.time(), "pid": os.getpid()}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, default=str))
        os.replace(tmp, path)
