"""The hub's in-process event bus (hub/bus.py): who hears what, in which order, and that one
failing subscriber stops nobody else."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hub.bus import ORIGIN_API, Event, EventBus


async def settle(bus: EventBus) -> None:
    """Let the background deliveries run (bounded: they are plain coroutines here)."""
    for _ in range(100):
        if not bus._tasks:
            return
        await asyncio.sleep(0)
    raise AssertionError("background deliveries never finished")


async def test_a_subscriber_never_hears_its_own_events() -> None:
    bus = EventBus()
    heard: dict[str, list[str]] = {"rollouts": [], "sync": []}

    def recorder(name: str) -> Callable[[Event], Awaitable[None]]:
        async def on(event: Event) -> None:
            heard[name].append(f"{event.kind}.{event.action}@{event.origin}")

        return on

    bus.subscribe("rollouts", recorder("rollouts"))
    bus.subscribe("sync", recorder("sync"), origins={ORIGIN_API})
    await bus.publish(Event("rollouts", "progress", {}, origin="rollouts"))
    await bus.publish(Event("desired", "changed", {"devices": ["d1"]}, origin=ORIGIN_API))
    await bus.publish(Event("reported", "changed", {"devices": ["d1"]}, origin="sync"))
    await settle(bus)
    assert heard["rollouts"] == ["desired.changed@api", "reported.changed@sync"]
    assert heard["sync"] == ["desired.changed@api"]  # operators' changes only


async def test_inline_subscribers_run_before_publish_returns_in_order() -> None:
    bus = EventBus()
    order: list[str] = []

    async def first(event: Event) -> None:
        order.append("first")

    async def boom(event: Event) -> None:
        raise RuntimeError("a broken subscriber")

    async def last(event: Event) -> None:
        order.append("last")

    bus.subscribe("a", first, inline=True)
    bus.subscribe("b", boom, inline=True)
    bus.subscribe("c", last, inline=True)
    await bus.publish(Event("devices", "enrolled", {"id": "d1"}))
    assert order == ["first", "last"]  # no task to wait for: done when publish returns


async def test_unsubscribe_and_close() -> None:
    bus = EventBus()
    heard: list[Event] = []
    gate = asyncio.Event()

    async def slow(event: Event) -> None:
        await gate.wait()

    async def on(event: Event) -> None:
        heard.append(event)

    unsubscribe = bus.subscribe("x", on)
    bus.subscribe("slow", slow)
    unsubscribe()
    await bus.publish(Event("keys", "created", {}))
    assert len(bus._tasks) == 1  # the slow one, still waiting
    await bus.close()  # the hub stopping: nothing left running
    assert not bus._tasks and heard == []
