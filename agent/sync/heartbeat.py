"""Heartbeat: every ``interval`` seconds, the device's latest state on ``sb.dev.<id>.heartbeat``.

Best effort by design: a heartbeat is superseded by the next one, so it goes by core NATS
publish and is not queued while offline (everything that must arrive travels the outbox). It
is skipped while the link is known to be down; a publish that races a link cut is lost, which
is fine for a message whose only job is "I am alive and this is my state now".
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NATS

from agent.sync.link import LinkState
from protocol.messages import HEARTBEAT_METRICS, ContainerSummary, Heartbeat
from protocol.subjects import heartbeat

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
MAX_ATTENTION = 16  # containers listed by name in a heartbeat; the rest are counted


def heartbeat_from_status(
    device_id: str, status: dict[str, Any], *, agent_version: str = AGENT_VERSION
) -> Heartbeat:
    """Build a heartbeat from ``Store.status_summary()`` (the same view ``status`` shows)."""
    dep = status.get("deployment") or {}
    all_containers = status.get("containers") or []
    running = [c for c in all_containers if c.get("state") == "running"]
    unhealthy = [c for c in all_containers if c.get("health") == "unhealthy"]
    attention = tuple(
        ContainerSummary(
            str(c.get("name") or "?")[:128],
            str(c.get("state") or "unknown")[:32],
            None if c.get("health") in (None, "none") else str(c["health"])[:32],
        )
        for c in all_containers
        if c.get("state") != "running" or c.get("health") == "unhealthy"
    )[:MAX_ATTENTION]
    # Four significant digits: a summary for people; full precision travels in the rollups.
    latest = status.get("metrics") or {}
    metrics = {
        k: float(f"{latest[k]:.4g}")
        for k in HEARTBEAT_METRICS
        if isinstance(latest.get(k), int | float) and math.isfinite(latest[k])
    }
    outbox = status.get("outbox") or {}
    return Heartbeat(
        device_id=device_id,
        ts=round(time.time(), 3),
        agent_version=agent_version,
        bundle_ref=dep.get("bundle_ref"),
        generation=dep.get("generation"),
        containers_total=len(all_containers),
        containers_running=len(running),
        containers_unhealthy=len(unhealthy),
        containers=attention,
        metrics=metrics,
        last_seq=int(outbox.get("last_seq") or 0),
        outbox_pending=int(outbox.get("pending") or 0),
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

    async def run(self, tick: float = 0.5) -> None:
        # Beat every interval, and at once when the link comes back (a new epoch), so the hub
        # sees the device online again without waiting out a whole interval.
        last = -float("inf")
        epoch = self.link.epoch
        while True:
            now = time.monotonic()
            if self.link.online and (now - last >= self.interval or self.link.epoch != epoch):
                epoch = self.link.epoch
                await self.beat()
                last = now
            await asyncio.sleep(min(tick, self.interval))
