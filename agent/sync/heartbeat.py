"""Heartbeat: every ``interval`` seconds, the device's latest state on ``sb.dev.<id>.heartbeat``.

Best effort by design: a heartbeat is superseded by the next one, so it goes by core NATS
publish and is not queued while offline (everything that must arrive travels the outbox). It
is skipped while the link is known to be down; a publish that races a link cut is lost, which
is fine for a message whose only job is "I am alive and this is my state now".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NATS

from agent.sync.link import LinkState
from protocol.messages import MAX_CONTAINERS, MAX_METRICS, ContainerSummary, Heartbeat
from protocol.subjects import heartbeat

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"


def heartbeat_from_status(
    device_id: str, status: dict[str, Any], *, agent_version: str = AGENT_VERSION
) -> Heartbeat:
    """Build a heartbeat from ``Store.status_summary()`` (the same view ``status`` shows)."""
    dep = status.get("deployment") or {}
    containers = tuple(
        ContainerSummary(
            str(c.get("name") or "?")[:128],
            str(c.get("state") or "unknown")[:32],
            None if c.get("health") is None else str(c["health"])[:32],
        )
        for c in (status.get("containers") or [])[:MAX_CONTAINERS]
    )
    metrics = {
        str(k)[:64]: float(v)
        for k, v in list((status.get("metrics") or {}).items())[:MAX_METRICS]
        if isinstance(v, int | float) and v == v and abs(v) != float("inf")
    }
    outbox = status.get("outbox") or {}
    return Heartbeat(
        device_id=device_id,
        ts=time.time(),
        agent_version=agent_version,
        bundle_ref=dep.get("bundle_ref"),
        generation=dep.get("generation"),
        containers=containers,
        metrics=metrics,
        last_seq=int(outbox.get("last_seq") or 0),
        outbox_pending=int(outbox.get("pending") or 0),
        uptime=None,
    )


class HeartbeatTask:
    def __init__(
        self,
        nc: NATS,
        device_id: str,
        link: LinkState,
        state: Callable[[], Heartbeat],
        interval: float = 30.0,
    ) -> None:
        self.nc = nc
        self.device_id = device_id
        self.link = link
        self.state = state
        self.interval = interval
        self.sent = 0
        self.skipped = 0
        self.last_sent_at: float | None = None
        self._extra = {"device": device_id}

    async def beat(self) -> bool:
        if not self.link.online:
            self.skipped += 1
            return False
        try:
            hb = await asyncio.to_thread(self.state)
            await self.nc.publish(heartbeat(self.device_id), hb.to_json())
        except Exception as exc:
            self.skipped += 1
            log.warning("heartbeat not sent: %s", exc, extra=self._extra)
            return False
        self.sent += 1
        self.last_sent_at = time.time()
        return True

    async def run(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self.interval)
