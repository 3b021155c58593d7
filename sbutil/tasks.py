"""Waiting with a timeout and stopping tasks, without Python 3.11's lost cancel.

On 3.11 (Debian 12, what devices and the hub run) ``asyncio.wait_for`` returns the awaited
result instead of raising ``CancelledError`` when the cancel arrives in the same loop
iteration as that result (CPython gh-86296, fixed in 3.12): the task goes on as if nobody
had asked it to stop. A ``stop()`` that cancelled each task once and awaited it then waited
for ever (the agent's nkey-migration loop: the leaf link came up as the service stopped, so
``wait_online`` answered True, and the loop went back to sleeping for 30 s, then 60 s...).

Two halves, because the library code we await (nats-py's requests, fetches and PubAck waits)
uses ``asyncio.wait_for`` too and can lose a cancel the same way:

- ``wait_for``: our own timed waits, built on ``asyncio.timeout`` (which counts cancel
  requests and never drops one).
- ``cancel_and_wait``: what every ``stop()`` uses; it cancels again a task that is still
  running after a grace period, so a cancel lost anywhere cannot hang a shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a cancelled task may take to end before it is cancelled again. Long enough for
# the clean-up a cancel starts (an unsubscribe, a close) on a loaded machine; short enough
# that a task which lost its cancel delays a stop by about this much, not for ever.
RECANCEL_AFTER = 1.0


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """``asyncio.wait_for(aw, timeout)`` that never loses a cancel (see the module's
    docstring): raises ``TimeoutError`` after ``timeout`` seconds, ``CancelledError`` when the
    calling task is cancelled, whatever else finished in the same loop iteration."""
    async with asyncio.timeout(timeout):
        return await aw


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any] | None], *, recancel_after: float = RECANCEL_AFTER
) -> None:
    """Cancel ``tasks`` and return once every one has ended, cancelling again any still
    running after ``recancel_after`` seconds (it lost the cancel in a library's
    ``asyncio.wait_for``). Their results and exceptions are consumed; a cancel of the caller
    itself propagates."""
    every = [t for t in tasks if t is not None]
    for t in every:
        t.cancel()
    pending = set(every)
    rounds = 0
    while pending:
        _, pending = await asyncio.wait(pending, timeout=recancel_after)
        rounds += 1
        for t in pending:
            # A warning once per task: one that never ends on a cancel is a bug to find.
            log.log(
                logging.WARNING if rounds == 1 else logging.DEBUG,
                "task %s still running %.0f s after its cancel; cancelling it again",
                t.get_name(),
                rounds * recancel_after,
            )
            t.cancel()
    for t in every:
        if not t.cancelled():
            t.exception()  # retrieved: a stop is not the place to report a task's failure
