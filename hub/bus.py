"""The hub's in-process event bus: every change the hub makes known goes through here once.

Publishers: the operator API (each committed ``Change``, origin ``api``), sync (reports
ingested, presence, enrollment: origin ``sync``) and the rollout controller (origin
``rollouts``). Subscribers: the change notices on NATS (``hub.api.service``, the wire
format of ``docs/operator-api.md``), the sync side (publishes desired documents after an
operator's change) and the rollout controller (wakes up). A subscriber never receives what it
published itself, and may ask for some origins only.

Why in-process: the controller used to subscribe to the hub's own NATS notices and filter
out its own echoes, beside a separate list of listeners for the sync side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from sbutil.tasks import cancel_and_wait

log = logging.getLogger(__name__)

ORIGIN_API = "api"  # an operator's change, committed by an API verb
ORIGIN_HUB = "hub"  # anything else the hub itself publishes without naming itself

# "These devices' desired documents may differ now": what a write that can change them asks
# of the desired writer (hub.sync), which re-resolves them and puts only the ones that do.
# It is not a change yet, so it stays on the bus: the notice watchers hear is the writer's
# ("desired", "changed"), for the documents it really wrote.
DESIRED_STALE = ("desired", "stale")
# (kind, action) of the events between the hub's own parts, never sent as change notices.
BUS_ONLY = frozenset({DESIRED_STALE})


@dataclass(frozen=True)
class Event:
    """One change: ``kind``/``action`` and ``data`` are the change notice's fields."""

    kind: str
    action: str
    data: Mapping[str, Any] = field(default_factory=dict)
    origin: str = ORIGIN_HUB  # who published it (a subscriber's name, or ORIGIN_API)
    by: str | None = None  # the API key's name, for an operator's change


Handler = Callable[[Event], Awaitable[None]]


@dataclass(frozen=True)
class _Subscription:
    name: str
    handler: Handler
    origins: frozenset[str] | None
    inline: bool


class EventBus:
    def __init__(self) -> None:
        self._subs: list[_Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def subscribe(
        self,
        name: str,
        handler: Handler,
        *,
        origins: Collection[str] | None = None,
        inline: bool = False,
    ) -> Callable[[], None]:
        """Call ``handler`` with every event not published as ``name``, of ``origins`` only
        when given. ``inline``: awaited in ``publish``, in subscription order (the NATS
        notice goes out before the publisher goes on); otherwise run as a background task,
        so a slow subscriber never holds up the publisher. Returns the unsubscribe."""
        sub = _Subscription(name, handler, None if origins is None else frozenset(origins), inline)
        self._subs.append(sub)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subs.remove(sub)

        return unsubscribe

    async def publish(self, event: Event) -> None:
        for sub in list(self._subs):
            if sub.name == event.origin:
                continue  # never its own echo
            if sub.origins is not None and event.origin not in sub.origins:
                continue
            if sub.inline:
                await _guarded(sub, event)
            else:
                task = asyncio.create_task(_guarded(sub, event), name=f"bus:{sub.name}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel the background deliveries still running (the hub is stopping)."""
        await cancel_and_wait(list(self._tasks))


async def _guarded(sub: _Subscription, event: Event) -> None:
    try:
        await sub.handler(event)
    except Exception:
        # The change is committed; one subscriber's failure must not stop the others.
        log.exception("event subscriber %s failed on %s.%s", sub.name, event.kind, event.action)
