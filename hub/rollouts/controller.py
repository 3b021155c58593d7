"""The rollout controller: a hub component that moves every active rollout along.

Every ``interval`` seconds — or at once when a change arrives on the hub's event bus
(``hub.bus``: a rollout started, paused, resumed or aborted; device reports ingested) — it runs ``engine.tick`` on the
store's writer thread, then asks the sync side's desired writer to publish the documents of
the devices whose phase started (the writer's put is what publishes the ``desired`` notice),
and publishes the rollout notices. Polling is the floor
because notices are best effort; the wake-up only makes progress prompt.

The bus never hands the controller what it published itself, so it never wakes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from hub.bus import Event
from hub.context import HubContext
from hub.rollouts import engine
from hub.rollouts.api import KIND
from sbutil.tasks import cancel_and_wait, wait_for

log = logging.getLogger(__name__)

INTERVAL = 1.0
REPUBLISH_EVERY = 30.0  # seconds between re-publishing written devices not yet acknowledged
ORIGIN = KIND  # the controller's name on the event bus


class Publisher(Protocol):
    def publish(self, device_ids: Iterable[str] | None = None, *, prompt: bool = False) -> Any: ...


def default_publisher(hub: HubContext) -> Publisher | None:
    """The sync side's ``DesiredWriter`` (``hub.sync.desired``), once it exists."""
    return hub.sync.desired


class RolloutController:
    def __init__(
        self,
        interval: float = INTERVAL,
        publisher: Callable[[HubContext], Publisher | None] = default_publisher,
    ) -> None:
        self.interval = interval
        self._publisher = publisher
        self._hub: HubContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._last_republish = 0.0
        # Whether the last tick found a running or paused rollout. With none, device reports
        # and presence changes cannot move anything, so only rollout notices (and the timer)
        # wake the controller: at 25 000 devices those wake-ups were 7 % of the hub's CPU.
        self._active = True
        self.ticks = 0
        self._memo = engine.Memo()  # observations carried from tick to tick (engine.Memo)

    async def start(self, hub: HubContext) -> None:
        self._hub = hub
        self._stopping = False
        self._unsubscribe = hub.bus.subscribe(ORIGIN, self._on_event)
        self._task = asyncio.create_task(self._run(), name="rollouts")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await cancel_and_wait([self._task])
        self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def _on_event(self, event: Event) -> None:
        if not self._active and event.kind != KIND:
            return
        if (event.kind, event.action) == ("desired", "changed"):
            # The writer put documents: what asked for it (an operator's change, or this
            # controller's own phase) already woke it, and the devices' answers come as
            # reports. Waking on it would only tick again after each of its own writes.
            return
        restored = event.data.get("restored")
        if event.action == "aborted" and isinstance(restored, list) and restored:
            await self._publish([str(d) for d in restored])
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.run_once()
            except Exception:
                log.exception("rollout controller tick failed; retrying")
            with contextlib.suppress(TimeoutError):
                await wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    async def run_once(self) -> engine.TickResult:
        hub = self._hub
        assert hub is not None
        result: engine.TickResult = await hub.call(engine.tick, hub.store, None, self._memo)
        self._active = result.active > 0
        self.ticks += 1
        # Devices whose phase started, and any whose resolution the tick changed otherwise (a
        # completed rollout's cleanup): the writer puts the documents that differ, and its
        # put is what publishes the desired notice.
        todo = result.publish + result.desired_changed
        if todo:
            await self._publish(sorted(set(todo)))
        now = time.monotonic()
        if now - self._last_republish >= REPUBLISH_EVERY:
            self._last_republish = now
            # Written devices that have not acknowledged: a document left as it was is not
            # put again (the writer skips it), so its prompt is sent again instead; a device
            # that missed the first one reads its key now, not at its timed read (900 s).
            unacked = await hub.call(engine.unacknowledged, hub.store)
            if unacked:
                await self._publish(sorted(set(unacked)), prompt=True)
        for action, data in result.notices:
            await hub.bus.publish(Event(KIND, action, data, origin=ORIGIN))
        return result

    async def _publish(self, device_ids: list[str], prompt: bool = False) -> None:
        writer = self._publisher(self._hub) if self._hub is not None else None
        if writer is None:
            log.debug("no desired writer yet; %d device(s) wait for it", len(device_ids))
            return
        try:
            await _await(writer.publish(device_ids, prompt=prompt))
        except Exception:
            # The assignments are committed; the periodic re-publish tries again.
            log.warning("publishing desired state for %d device(s) failed", len(device_ids),
                        exc_info=True)  # fmt: skip


async def _await(value: Any) -> Any:
    return await value if isinstance(value, Awaitable) else value


def install(hub: HubContext) -> RolloutController:
    """Wire rollouts into a hub: serve the ``rollouts.*`` verbs, keep every deployment row
    of a rollout's devices (an ingest row handler on ``hub.sync``) and run the controller as
    a hub component. Call it after ``hub.api`` exists and before ``hub.sync`` and the
    components start."""
    from hub.rollouts.api import VERBS
    from hub.rollouts.service import record_deployments

    assert hub.api is not None
    for verb, handler in VERBS.items():
        hub.api.register(verb, handler)
    # Every deployment row a rollout's device reports, in the ingest transaction: the
    # verdict for the rollout's generation survives whatever the device does next.
    hub.sync.row_handlers.append(record_deployments)
    controller = RolloutController()
    hub.components.append(controller)
    return controller
