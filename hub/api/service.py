"""The operator API as a NATS micro service: one endpoint on ``sb.api.>`` dispatching by verb.

One wildcard endpoint (rather than one per verb) lets an unknown verb get a proper
``not_found`` error instead of a silent NoResponders. Requests run on the store's single
worker thread; each committed change goes to the hub's event bus (``hub.bus``) after the
write, and the service's own bus subscriber publishes it as a change notice on NATS.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from nats.aio.client import Client as NATS
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from hub import __version__
from hub.api.dispatch import AsyncHandler, Reply, dispatch, dispatch_async
from hub.api.handlers import HANDLERS, Handler
from hub.api.notices import DeviceNotices
from hub.bus import BUS_ONLY, DESIRED_STALE, ORIGIN_API, ORIGIN_HUB, Event, EventBus
from hub.metrics import HubMetrics
from hub.store import Store
from hub.timeutil import now_iso
from protocol.api import API_KEY_HEADER, REQUESTS, SERVICE_NAME, VERBS
from protocol.errors import HTTP_STATUS
from protocol.subjects import API_ALL, api_verb, fleet_change

log = logging.getLogger(__name__)
_KNOWN = frozenset(VERBS)
# (kind, action) of the notices that say devices' state changed; their ids also feed the
# coalesced devices/updated notice.
DEVICE_STATE_NOTICES = frozenset(
    {("reported", "changed"), ("devices", "online"), ("devices", "offline")}
)


class ApiService:
    def __init__(
        self,
        nc: NATS,
        store: Store,
        executor: Executor,
        metrics: HubMetrics | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.nc = nc
        self.store = store
        self.executor = executor
        self.metrics = metrics
        self._service: Service | None = None
        self.handlers: dict[str, Handler] = dict(HANDLERS)
        self.async_handlers: dict[str, AsyncHandler] = {}
        self.bus = bus if bus is not None else EventBus()
        # First and inline: the NATS notice of a change is out before its publisher goes on.
        self.bus.subscribe("nats", self._notify, inline=True)
        self.device_notices = DeviceNotices(self._send_devices_updated)

    def register(self, verb: str, handler: Handler) -> None:
        """Serve one more verb (the sync issue's rollouts.*, for instance). Its body fields
        and whether it writes are declared in ``protocol.api.REQUESTS``, the shared contract."""
        if verb not in REQUESTS:
            raise ValueError(f"declare {verb!r} in protocol.api.REQUESTS first")
        self.handlers[verb] = handler

    def register_async(self, verb: str, handler: AsyncHandler) -> None:
        """Serve a verb whose handler awaits something other than the store (device RPC).
        Same checks first (key, role, body), run on the store thread."""
        if verb not in REQUESTS:
            raise ValueError(f"declare {verb!r} in protocol.api.REQUESTS first")
        self.async_handlers[verb] = handler

    async def start(self) -> None:
        self._service = await add_service(
            self.nc,
            name=SERVICE_NAME,
            version=__version__,
            description="SignalBeam operator API (see docs/operator-api.md)",
        )
        await self._service.add_endpoint(name="api", subject=API_ALL, handler=self.handle)

    async def stop(self) -> None:
        await self.device_notices.stop()
        if self._service is not None:
            await self._service.stop()
            self._service = None

    async def handle(self, req: Request) -> None:
        started = time.perf_counter()
        verb = api_verb(req.subject)
        # nats.micro's Request does not expose the reply subject; a plain publish (no reply)
        # is not an API call: doing its write without a way to report the result would only
        # surprise, so it is dropped.
        if not req._msg.reply:
            log.warning("api %s published without a reply subject; ignored", verb[:64])
            return
        key = (req.headers or {}).get(API_KEY_HEADER)
        loop = asyncio.get_running_loop()
        reply: Reply
        if verb in self.async_handlers:

            async def run_sync(fn: Callable[..., Any], *args: Any) -> Any:
                return await loop.run_in_executor(self.executor, fn, *args)

            reply = await dispatch_async(
                run_sync, self.store, verb, req.data, key, self.async_handlers[verb]
            )
        else:
            reply = await loop.run_in_executor(
                self.executor, dispatch, self.store, verb, req.data, key, self.handlers
            )
        data = json.dumps(reply.body, separators=(",", ":"), default=str).encode()
        if reply.code == "ok":
            await req.respond(data)
        else:
            # The micro error headers let `nats micro stats` count failures too.
            await req.respond_error(str(HTTP_STATUS.get(reply.code, 500)), reply.code, data)
        known = verb if verb in _KNOWN else "unknown"
        if self.metrics is not None:
            self.metrics.observe_api(known, reply.code, time.perf_counter() - started)
        if reply.code != "ok" and reply.code != "internal":
            log.info(
                "api %s refused: %s",
                known,
                str(reply.body["error"].get("message"))[:200],  # it may quote client input
                extra={"verb": known, "code": reply.code},
            )
        elif reply.changes and reply.caller is not None:
            # An audit line for every change an operator made, naming the key used.
            log.info("api %s by key %s (%s)", known, reply.caller.name, reply.caller.key_id)
        by = reply.caller.name if reply.caller is not None else None
        for change in reply.changes:
            await self.bus.publish(
                Event(change.kind, change.action, change.data, origin=ORIGIN_API, by=by)
            )

    async def publish_change(
        self, kind: str, action: str, data: dict[str, Any], *, origin: str = ORIGIN_HUB
    ) -> None:
        """Make a change the hub itself made known (on the bus, hence as a notice)."""
        await self.bus.publish(Event(kind, action, data, origin=origin))

    async def _notify(self, event: Event) -> None:
        """The bus subscriber that publishes every change as a notice on NATS."""
        kind, action, data = event.kind, event.action, event.data
        if (kind, action) == DESIRED_STALE and isinstance(data.get("devices"), list):
            # What asked for the re-resolve changed these devices' records (their windows,
            # values, budget, groups, assignment) whether or not a document differs: a live
            # view reloads them from the coalesced devices/updated, the desired notice being
            # the writer's alone.
            self.device_notices.changed(str(d) for d in data["devices"])
        if (kind, action) in BUS_ONLY:
            return  # a request between the hub's parts, not a change (yet)
        if (kind, action) in DEVICE_STATE_NOTICES and isinstance(data.get("devices"), list):
            # Reports ingested (sync's on_applied) and presence flips: these devices' state
            # changed, so a live view also hears of them in the coalesced devices/updated.
            self.device_notices.changed(str(d) for d in data["devices"])
        notice = {"kind": kind, "action": action, "ts": now_iso(), **data}
        if event.by is not None:
            notice["by"] = event.by
        await self._send(kind, action, notice)

    async def _send_devices_updated(self, ids: list[str] | None) -> None:
        # A wire-only notice for live views (coalesced from events already on the bus).
        notice = {"kind": "devices", "action": "updated", "ts": now_iso(), "ids": ids}
        await self._send("devices", "updated", notice)

    async def _send(self, kind: str, action: str, notice: dict[str, Any]) -> None:
        try:
            await self.nc.publish(fleet_change(kind), json.dumps(notice, default=str).encode())
        except Exception:
            # The change is committed; a lost notice only delays a live view until it refreshes.
            log.warning("could not publish change notice %s.%s", kind, action, exc_info=True)
