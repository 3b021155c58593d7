"""Heartbeat: every ``interval`` seconds, the device's latest state on ``sb.dev.<id>.heartbeat``,
and the end-to-end liveness check that "online" rests on.

The heartbeat is a request: the hub answers it (``{"v":1}``), and that answer, like a PubAck
or a direct-get reply, is what "the hub answered recently" means (``agent.sync.liveness``).
No answer within ``ack_timeout`` (a silent link, a reset one, a hub that is down) marks the
link lost, so the agent says "hub unreachable" one interval plus one timeout after the last
answer, whatever the leaf's own view of its TCP link. A hub that does not answer heartbeats
(an older one, or a bare nats-server in tests) is checked with ``fallback`` instead: the
direct get of the device's own desired key.

Offline, the heartbeat keeps going as the probe that notices the hub again, every
``offline_min`` doubling to ``offline_max`` (and at once when ``probe_now()`` is called, e.g.
when the leaf's link comes back up). A heartbeat is superseded by the next one, so it is
never queued; everything that must arrive travels the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS

from agent import AGENT_VERSION
from agent.sync.link import LinkState
from agent.sync.liveness import ack_timeout_for
from protocol.heartbeat import HEARTBEAT_METRICS, ContainerSummary, Heartbeat
from protocol.subjects import heartbeat
from sbutil.tasks import wait_for

log = logging.getLogger(__name__)

MAX_ATTENTION = 16  # containers listed by name in a heartbeat; the rest are counted


def heartbeat_from_status(
    device_id: str,
    status: dict[str, Any],
    *,
    agent_version: str = AGENT_VERSION,
    interval: float | None = None,
    budget: int | None = None,
    bytes_day: int | None = None,
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
        interval=interval,
        budget=budget,
        bytes_day=bytes_day,
    )


Fallback = Callable[[], Awaitable[bool]]
HEARTBEAT_ACK_TIMEOUT = 10.0


class HeartbeatTask:
    def __init__(
        self,
        nc: NATS,
        device_id: str,
        link: LinkState,
        state: Callable[[], Awaitable[Heartbeat]],
        interval: float = 30.0,
        *,
        ack_timeout: float = HEARTBEAT_ACK_TIMEOUT,
        fallback: Fallback | None = None,
        offline_min: float = 1.0,
        offline_max: float = 5.0,
        idle_factor: float = 2.0,
        full_every: float = 600.0,
    ) -> None:
        self.nc = nc
        self.device_id = device_id
        self.link = link
        self.state = state
        self.interval = interval
        # Half an interval at most: the link is then judged within 1.5 intervals of the last
        # answer (docs/sync.md "What online means").
        self.ack_timeout = ack_timeout_for(interval, ack_timeout)
        self.fallback = fallback
        self.offline_min = min(offline_min, interval)
        self.offline_max = max(self.offline_min, min(offline_max, interval))
        # Fewer, smaller heartbeats while nothing changes (docs/sync.md "Heartbeats"): the
        # interval stretches to ``idle_factor`` intervals, and a "same" heartbeat (identity
        # and time only) stands for the last full one, which is sent again at least every
        # ``full_every`` seconds. Liveness follows ``current_interval``.
        self.idle_factor = idle_factor
        self.full_every = full_every
        self.current_interval = interval
        self.clock: Callable[[], float] = time.monotonic
        self.full_sent = 0
        self._full_key: tuple[Any, ...] | None = None
        self._full_at = -float("inf")
        self.sent = 0
        self.acked = 0  # answered by the hub (the heartbeat's own reply or the fallback)
        self.unanswered = 0
        self.skipped = 0
        self.last_sent_at: float | None = None
        self.last_answer_at: float | None = None
        self._now = asyncio.Event()
        self._extra = {"device": device_id}

    def set_interval(self, interval: float) -> None:
        """A new online interval (a metered link's pacing); the reply timeout stays."""
        self.interval = interval
        self.current_interval = interval
        self.offline_max = max(self.offline_min, min(self.offline_max, interval))
        self._full_key = None  # the next one is full, with the new interval

    def probe_now(self) -> None:
        """Send the next heartbeat at once (the leaf's link just came up: confirm it)."""
        self._now.set()

    async def beat(self) -> bool:
        """Send one heartbeat; True when the hub answered (then the link is online)."""
        try:
            hb = await self.state()  # reads the store on its own thread
            now = self.clock()
            key = hb.change_key()
            unchanged = key == self._full_key
            same = unchanged and now - self._full_at < self.full_every
            # Said in the beat itself, so the hub's offline grace follows it.
            interval = self.interval * (self.idle_factor if unchanged else 1.0)
            hb = dataclasses.replace(hb, interval=interval, same=same)
            data = hb.to_json()
        except Exception as exc:
            self.skipped += 1
            log.warning("heartbeat not built: %s", exc, extra=self._extra)
            return False
        answered, why = await self._request(data)
        if answered:
            self.current_interval = interval
            if not same:
                self.full_sent += 1
                self._full_key, self._full_at = key, now
        else:
            # Unanswered: the next answered one is full (the hub may have missed this change).
            self._full_key = None
            self.current_interval = self.interval
        if not answered and self.fallback is not None:
            try:
                answered = await self.fallback()
            except Exception as exc:  # the fallback must never end the liveness check
                log.debug("liveness fallback failed: %r", exc, extra=self._extra)
        if answered:
            self.acked += 1
            self.last_answer_at = time.time()
            self.link.contact()
        else:
            self.unanswered += 1
            # Already offline with a reason (e.g. the leaf's own "certificate signed by unknown
            # authority"): keep that one, it says more than "no answer" does.
            if self.link.online or not self.link.last_error:
                self.link.lost(f"the hub did not answer a heartbeat ({why})")
        return answered

    async def _request(self, data: bytes) -> tuple[bool, str]:
        self.sent += 1
        self.last_sent_at = time.time()
        try:
            await self.nc.request(heartbeat(self.device_id), data, timeout=self.ack_timeout)
        except nats.errors.NoRespondersError:
            return False, "no responders: the hub is not subscribed or the link is down"
        except (nats.errors.TimeoutError, TimeoutError):
            return False, f"no reply within {self.ack_timeout:g}s"
        except Exception as exc:  # a closed or reconnecting local connection
            return False, f"local NATS connection: {type(exc).__name__}"
        return True, ""

    async def run(self, tick: float = 0.5) -> None:
        # Online: every interval. Offline: soon, then less often (the probe that finds the hub
        # again). At once on probe_now().
        last = -float("inf")
        offline_delay = self.offline_min
        while True:
            due = self.current_interval if self.link.online else offline_delay
            if self._now.is_set() or time.monotonic() - last >= due:
                self._now.clear()
                last = time.monotonic()
                if await self.beat():
                    offline_delay = self.offline_min
                else:
                    offline_delay = min(offline_delay * 2, self.offline_max)
            with contextlib.suppress(TimeoutError):
                await wait_for(self._now.wait(), min(tick, self.current_interval))
