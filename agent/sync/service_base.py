"""The sync service's state (links, tasks, credentials held) and the store reads it shares.

The bottom of ``SyncService``'s parts (agent.sync.service): each part adds one concern.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NATS

from agent.store import Store
from agent.sync.downlink import Downlink
from agent.sync.heartbeat import HeartbeatTask, heartbeat_from_status
from agent.sync.intake import Intake
from agent.sync.jwtauth import JwtRenewer
from agent.sync.leaf import LeafServer
from agent.sync.link import LinkState
from agent.sync.pacing import LinkUsage, Pacing, pacing_for
from agent.sync.rpc import RpcHandlers, RpcServer
from agent.sync.settings import SyncSettings
from agent.sync.uplink import Uplink
from protocol.enroll import EnrollReply
from protocol.heartbeat import Heartbeat

# At most one switch of the leaf's login (JWT <-> password) per this many seconds: a device
# that neither works for (decommissioned) must not restart its leaf in a tight loop.
LOGIN_SWITCH_GAP = 10.0

Trigger = Callable[[], Any]


class ServiceBase:
    """State every part of ``SyncService`` shares; built once, in ``__init__``."""

    def __init__(
        self,
        store: Store,
        settings: SyncSettings,
        device_id: str,
        *,
        trigger: Trigger,
        handlers: RpcHandlers | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.device_id = device_id
        self.trigger = trigger
        self.handlers = handlers
        self.link = LinkState(device_id)
        self.leaf: LeafServer | None = None
        self.nc: NATS | None = None
        self.uplink: Uplink | None = None
        self.downlink: Downlink | None = None
        self.intake: Intake | None = None
        self.heartbeat: HeartbeatTask | None = None
        self.rpc: RpcServer | None = None
        self.renewer: JwtRenewer | None = None
        self._creds: EnrollReply | None = None  # as last saved (a renewal replaces it)
        self._leaf_jwt = False  # whether the leaf logs in with the JWT (else the password)
        self._leaf_switched = -LOGIN_SWITCH_GAP
        self.started_at: float | None = None
        self.pacing: Pacing = pacing_for(
            None,
            heartbeat=settings.heartbeat_interval,
            desired_poll=settings.downlink.poll_interval,
        )
        self.usage = LinkUsage()
        self._tasks: list[asyncio.Task[None]] = []
        self._extra = {"device": device_id}

    @property
    def online(self) -> bool:
        return self.link.online

    @property
    def last_contact(self) -> float | None:
        return self.link.last_contact

    async def _heartbeat_state(self) -> Heartbeat:
        p = self.pacing
        return heartbeat_from_status(
            self.device_id,
            await self.store.read(Store.status_summary),
            interval=p.heartbeat,
            budget=p.budget,
            bytes_day=self.usage.last_day(),
        )

    async def _outbox_pending(self) -> int | None:
        try:
            return int(await self.store.read(Store.outbox_depth))
        except Exception:
            return None

    async def _last_hub_generation(self) -> int | None:
        try:
            revs = await self.store.read(Store.desired_revisions, 50)
        except Exception:
            return None
        gens = [r.generation for r in revs if r.source == "hub"]
        return max(gens) if gens else None
