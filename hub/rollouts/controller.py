"""The rollout controller: a hub component that moves every active rollout along.

Every ``interval`` seconds — or at once when a change notice arrives (a rollout started,
paused, resumed or aborted; device reports ingested) — it runs ``engine.tick`` on the
store's writer thread, then asks the sync side's desired writer to publish the documents of
the devices whose phase started, and publishes the change notices. Polling is the floor
because notices are best effort; the wake-up only makes progress prompt.

Its own ``progress`` notices are ignored when they come back, so it never wakes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hub.rollouts import engine
from hub.rollouts.api import KIND
from protocol.subjects import FLEET_CHANGES_PREFIX

log = logging.getLogger(__name__)

INTERVAL = 1.0
REPUBLISH_EVERY = 30.0  # seconds between re-publishing written devices not yet acknowledged


class Publisher(Protocol):
    async def publish(self, device_ids: Iterable[str] | None = None) -> Any: ...


class HubLike(Protocol):
    """The parts of ``hub.app.Hub`` the controller uses (a Protocol: hub.app imports us)."""

    store: Any
    nc: Any
    api: Any

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any: ...


def default_publisher(hub: Any) -> Publisher | None:
    """The sync side's ``DesiredWriter`` (``hub.sync.desired``), once it exists."""
    return getattr(getattr(hub, "sync", None), "desired", None)


class RolloutController:
    def __init__(
        self,
        interval: float = INTERVAL,
        publisher: Callable[[Any], Publisher | None] = default_publisher,
    ) -> None:
        self.interval = interval
        self._publisher = publisher
        self._hub: HubLike | None = None
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._last_republish = 0.0
        # Whether the last tick found a running or paused rollout. With none, device reports
        # and presence changes cannot move anything, so only rollout notices (and the timer)
        # wake the controller: at 25 000 devices those wake-ups were 7 % of the hub's CPU.
        self._active = True
        self.ticks = 0

    async def start(self, hub: HubLike) -> None:
        self._hub = hub
        self._stopping = False
        if hub.nc is not None:
            self._sub = await hub.nc.subscribe(f"{FLEET_CHANGES_PREFIX}.>", cb=self._on_change)
        self._task = asyncio.create_task(self._run(), name="rollouts")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def _on_change(self, msg: Msg) -> None:
        try:
            notice = json.loads(msg.data)
        except ValueError:
            return
        if not isinstance(notice, dict):
            return
        if notice.get("kind") == KIND and notice.get("action") == "progress":
            return  # our own
        if notice.get("kind") == "devices" and notice.get("action") == "updated":
            return  # the TUI's coalesced echo of `reported`/presence notices already seen here
        if not self._active and notice.get("kind") != KIND:
            return
        restored = notice.get("restored")
        if notice.get("action") == "aborted" and isinstance(restored, list) and restored:
            await self._publish([str(d) for d in restored])
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.run_once()
            except Exception:
                log.exception("rollout controller tick failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    async def run_once(self) -> engine.TickResult:
        hub = self._hub
        assert hub is not None
        result: engine.TickResult = await hub.call(engine.tick, hub.store)
        self._active = result.active > 0
        self.ticks += 1
        todo = list(result.publish)
        now = time.monotonic()
        if now - self._last_republish >= REPUBLISH_EVERY:
            self._last_republish = now
            todo += await hub.call(engine.unacknowledged, hub.store)
        if todo:
            await self._publish(sorted(set(todo)))
        if hub.api is not None:
            if result.desired_changed:
                await hub.api.publish_change(
                    "desired", "changed", {"devices": result.desired_changed}
                )
            for action, data in result.notices:
                await hub.api.publish_change(KIND, action, data)
        return result

    async def _publish(self, device_ids: list[str]) -> None:
        writer = self._publisher(self._hub)
        if writer is None:
            log.debug("no desired writer yet; %d device(s) wait for it", len(device_ids))
            return
        try:
            await _await(writer.publish(device_ids))
        except Exception:
            # The assignments are committed; the periodic re-publish tries again.
            log.warning("publishing desired state for %d device(s) failed", len(device_ids),
                        exc_info=True)  # fmt: skip


async def _await(value: Any) -> Any:
    return await value if isinstance(value, Awaitable) else value


def install(hub: Any) -> RolloutController:
    """Wire rollouts into a hub: serve the ``rollouts.*`` verbs, keep every deployment row
    of a rollout's devices (an ingest row handler on ``hub.sync``) and run the controller as
    a hub component. Call it after ``hub.api`` exists and before ``hub.sync`` and the
    components start."""
    from hub.rollouts.api import VERBS
    from hub.rollouts.store import record_deployments

    for verb, handler in VERBS.items():
        hub.api.register(verb, handler)
    sync = getattr(hub, "sync", None)
    if sync is not None:
        # Every deployment row a rollout's device reports, in the ingest transaction: the
        # verdict for the rollout's generation survives whatever the device does next.
        sync.row_handlers.append(record_deployments)
    controller = RolloutController()
    hub.components.append(controller)
    return controller
