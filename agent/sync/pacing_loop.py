"""The metered pacing loop: apply the pacing for the budget in force (agent.sync.pacing) to
the heartbeat, uplink, downlink and leaf, and sample the leaf link's traffic.
"""

from __future__ import annotations

import asyncio
import logging
import time

from agent.store import Store
from agent.sync.login import LoginPart
from agent.sync.pacing import Pacing, pacing_for
from protocol.metered import format_budget, format_bytes

# One logger name for all of the service's records, as before it was split into modules.
log = logging.getLogger("agent.sync.service")


class PacingPart(LoginPart):
    """The metered pacing loop (see the module's docstring)."""

    async def _choose_pacing(self) -> Pacing:
        """The pacing for the budget in force: the hub's (newest desired revision), else the
        config's (agent.sync.pacing)."""
        try:
            hub_budget = await self.store.read(Store.metered_budget)
        except Exception:  # a store without it (tests' fakes) or a read failure
            hub_budget = None
        budget = hub_budget if hub_budget is not None else self.settings.metered_budget
        return pacing_for(
            budget,
            heartbeat=self.settings.heartbeat_interval,
            desired_poll=self.settings.downlink.poll_interval,
        )

    async def _pace(self) -> None:
        """Every ``status_every`` s: apply the pacing for the budget in force (a hub revision
        may have changed it) and sample the leaf link's traffic for ``bytes_day``."""
        applied: Pacing | None = None
        while True:
            p = await self._choose_pacing()
            if p != applied:
                await self._apply_pacing(p)
                applied = p
            if self.leaf is not None:
                total = await self.leaf.traffic()
                if total is not None:
                    self.usage.sample(time.time(), total)
            await asyncio.sleep(self.settings.status_every)

    async def _apply_pacing(self, p: Pacing) -> None:
        self.pacing = p
        if self.heartbeat is not None:
            self.heartbeat.set_interval(p.heartbeat)
        if self.uplink is not None:
            self.uplink.flush_after = p.flush
        if self.downlink is not None and not self.downlink.report_link:
            # With our own leaf the read is a safety net only (puts are prompted).
            self.downlink.set_poll_interval(p.desired_poll)
        if self.leaf is not None:
            self.leaf.set_ping_interval(p.leaf_ping)
        try:
            await self.store.write(Store.set_upstream_span, p.rollup_span)
        except Exception as exc:
            log.warning("metrics span not set: %s", exc, extra=self._extra)
        if p.budget is not None:
            log.info(
                "metered link: budget %s, tier %d (heartbeat %gs, rollups every %gs, rows of"
                " %ds, estimated %s/day idle)",
                format_budget(p.budget),
                p.tier,
                p.heartbeat,
                p.flush,
                p.rollup_span,
                format_bytes(p.estimate()),
                extra=self._extra,
            )
