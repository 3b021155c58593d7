"""sbutil.tasks: timed waits and stops that never lose a cancel (Python 3.11's wait_for does,
CPython gh-86296). Each test forces the one interleaving that loses it: the awaited thing
finishes, and the cancel lands before the waiting task has run again."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agent.sync.link import LinkState
from sbutil.tasks import cancel_and_wait, wait_for


async def cancel_as_it_finishes(
    waiter: Callable[[asyncio.Event], Awaitable[Any]],
) -> asyncio.Task[None]:
    """Run a loop shaped like the agent's (wait with a timeout, then sleep long), set the
    event it waits on, let the event's own waiter run one loop iteration and cancel the loop
    before it has run again; then let it run a few iterations. Returns the task: ended when
    the cancel was delivered, still sleeping when it was lost."""
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            await waiter(event)
            event.clear()
            await asyncio.sleep(3600)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)  # the loop now waits on the event
    event.set()
    await asyncio.sleep(0)  # the event's waiter ran; the loop itself has not
    task.cancel()
    for _ in range(10):  # iterations, not time: enough for a delivered cancel to end it
        await asyncio.sleep(0)
    return task


async def stopped(task: asyncio.Task[None]) -> bool:
    """Whether the task had ended; a still-running one is stopped for good here."""
    ended = task.done()
    await cancel_and_wait([task], recancel_after=0.05)
    return ended


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="fixed in 3.12's wait_for")
async def test_the_interleaving_loses_a_cancel_in_the_stdlib_wait_for() -> None:
    """The bug the module works around, reproduced: without this the other tests prove
    nothing on this interpreter."""
    task = await cancel_as_it_finishes(lambda e: asyncio.wait_for(e.wait(), 60))
    assert not await stopped(task)


async def test_wait_for_delivers_a_cancel_that_lands_as_the_wait_ends() -> None:
    task = await cancel_as_it_finishes(lambda e: wait_for(e.wait(), 60))
    assert await stopped(task) and task.cancelled()


async def test_wait_for_times_out_and_returns_results() -> None:
    with pytest.raises(TimeoutError):
        await wait_for(asyncio.Event().wait(), 0.01)
    event = asyncio.Event()
    event.set()
    assert await wait_for(event.wait(), 60) is True


async def test_link_wait_online_is_cancelled_when_the_link_comes_up_as_it_stops() -> None:
    """The agent's hang (test_sync_agent.py::test_leaf_supervisor_restarts_a_killed_leaf's
    teardown, reproduced under two busy cores): the nkey migration waited for the link, the
    link came up as the service stopped, wait_online answered True and the loop went back to
    its 30 s sleep instead of ending."""
    link = LinkState("dev-1")

    async def migrate_like() -> None:
        while True:
            await link.wait_online(60)
            await asyncio.sleep(3600)

    task = asyncio.create_task(migrate_like())
    await asyncio.sleep(0)
    link.contact()
    await asyncio.sleep(0)
    task.cancel()
    for _ in range(10):
        await asyncio.sleep(0)
    assert await stopped(task) and task.cancelled()


async def test_cancel_and_wait_ends_a_task_that_lost_its_cancel() -> None:
    """A loop that lost its cancel in a library's wait_for and went back to sleeping (the
    nkey migration's 30 s, 60 s... backoff) still ends: it is cancelled again."""
    event = asyncio.Event()
    laps = 0

    async def loop() -> None:
        nonlocal laps
        while True:
            laps += 1
            await asyncio.wait_for(event.wait(), 60)  # the library's wait_for, on purpose
            event.clear()
            await asyncio.sleep(3600)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    event.set()
    await asyncio.sleep(0)
    await cancel_and_wait([task], recancel_after=0.05)
    assert task.cancelled() and laps == 1


async def test_cancel_and_wait_consumes_failures_and_skips_none() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fail())
    await asyncio.wait({failed})
    sleeping = asyncio.create_task(asyncio.sleep(3600))
    await cancel_and_wait([failed, None, sleeping])
    assert sleeping.cancelled() and isinstance(failed.exception(), RuntimeError)
