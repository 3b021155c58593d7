"""Watching the link to the hub: staleness, the leaf's /leafz, and the direct-get fallback
probe (what online means: agent.sync.liveness).
"""

from __future__ import annotations

import asyncio
import logging
import time

import nats.js.errors

from agent.sync.liveness import ack_timeout_for, is_stale, stale_after
from agent.sync.pacing_loop import PacingPart
from agent.sync.service_base import LOGIN_SWITCH_GAP
from sbutil.tasks import wait_for

# One logger name for all of the service's records, as before it was split into modules.
log = logging.getLogger("agent.sync.service")


class LinkWatchPart(PacingPart):
    """Liveness of the link to the hub (see the module's docstring)."""

    async def _hub_answers_a_read(self) -> bool:
        """Whether the hub answers a direct get of our desired key (any answer: a value, "no
        such key", an API error). Only a liveness check: applying what it returns stays the
        downlink's job, so its own bookkeeping (missed prompts) is not disturbed."""
        assert self.downlink is not None
        try:
            await wait_for(self.downlink.kv.get(self.device_id), self._fallback_timeout())
        except nats.js.errors.ServiceUnavailableError:
            return False  # JetStream's "no responders": nobody answered
        except nats.js.errors.APIError:
            return True  # e.g. key not found: the hub's JetStream answered
        except Exception:  # no responders, a timeout, a closed local connection
            return False
        return True

    def _ack_timeout(self) -> float:
        hb = self.heartbeat
        s = self.settings
        return (
            ack_timeout_for(s.heartbeat_interval, s.heartbeat_ack_timeout)
            if hb is None
            else hb.ack_timeout
        )

    def _fallback_timeout(self) -> float:
        # Half the heartbeat's own timeout: one probe (heartbeat, then this read) then takes at
        # most 0.75 interval, so "unreachable" comes within 1.75 intervals. Not under 0.5 s: a
        # sub-second interval (tests) must not make a loaded hub look unreachable.
        half = max(0.5, self._ack_timeout() / 2)
        return min(self.settings.downlink.request_timeout, half)

    def _stale_after(self) -> float:
        # The heartbeat's own interval now: longer while nothing changes, or on a metered
        # link (agent.sync.pacing); "online" still means the hub answered the last probe.
        hb = self.heartbeat
        interval = self.settings.heartbeat_interval if hb is None else hb.current_interval
        return stale_after(interval, self._ack_timeout(), self._fallback_timeout())

    async def _watch_link(self) -> None:
        """Every ``leaf_check`` s: a new PubAck counts as an answer; no answer for
        ``stale_after`` s means lost (the safety net behind the heartbeat's own timeout); and
        with our own leaf, its /leafz saying the link is down means lost at once, and the
        link coming back up is confirmed by a heartbeat at once. /leafz saying "up" never
        makes the agent online by itself: a silent link looks up there for minutes."""
        logged: str | None = None
        seen_ack = None if self.uplink is None else self.uplink.stats.last_ack_at
        was_linked = False
        while True:
            ack = None if self.uplink is None else self.uplink.stats.last_ack_at
            if ack is not None and ack != seen_ack:
                seen_ack = ack
                self.link.contact()
            stale = self._stale_after()
            if self.link.online and is_stale(time.time(), self.link.last_contact, stale):
                self.link.lost(f"no answer from the hub for {stale:.0f}s")
            if self.leaf is not None:
                linked = await self.leaf.linked()
                if linked:
                    if not was_linked and not self.link.online and self.heartbeat is not None:
                        self.heartbeat.probe_now()
                    logged = None
                else:
                    logged = await self._leaf_down(logged)
                was_linked = linked
            await asyncio.sleep(self.settings.leaf_check)

    async def _leaf_down(self, logged: str | None) -> str | None:
        assert self.leaf is not None
        # The cause (e.g. "x509: certificate signed by unknown authority") is only in the
        # leaf server's log; surface it in the status and log it once per change.
        cause = await asyncio.to_thread(self.leaf.link_error)
        creds = self._creds
        if (
            cause
            and "authorization violation" in cause.lower()
            and creds is not None
            and creds.nats_jwt
            and creds.nats_password
            and time.monotonic() - self._leaf_switched >= LOGIN_SWITCH_GAP
        ):
            # Holding both: the hub moved to JWT mode (or is still in password mode).
            await self._switch_leaf_login()
            return logged
        reason = "the leaf's link to the hub is down"
        if cause:
            reason += f": {cause}"
            if cause != logged:
                log.warning("leaf link to the hub failing: %s", cause, extra=self._extra)
                logged = cause
        self.link.lost(reason)
        return logged
