"""The one way tests wait for a condition: ``eventually``.

Bounded in time, never a bare sleep: the check is polled until its value is truthy and that
value is returned; past ``timeout`` an AssertionError names ``what`` (and the last error a
tolerated exception gave). The check may be a plain function or return an awaitable. Bounds
are generous (tens of seconds): the suite runs on shared, loaded machines, so a deadline
marks a hang, not a speed.

``eventually_blocking`` is the same loop for a test that is not async (it runs it in an
event loop of its own).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

DEFAULT_TIMEOUT = 60.0
Pause = Callable[[float], Awaitable[Any]]


async def eventually(
    check: Callable[[], Any],
    what: str = "the condition",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.05,
    tolerate: tuple[type[BaseException], ...] = (),
    pause: Pause | None = None,
) -> Any:
    """Poll ``check`` until its value is truthy and return the value. ``tolerate``: exception
    types that count as "not yet" (say a server still starting). ``pause``: how to wait
    between polls (``asyncio.sleep``; a Textual test passes ``pilot.pause``)."""
    if not isinstance(what, str):
        raise TypeError(f"what must be a text, not {what!r} (timeout is keyword-only)")
    wait = pause or asyncio.sleep
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except tolerate as exc:
            last = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last!r})" if last is not None else ""
            raise AssertionError(f"not met in {timeout:g}s: {what}{detail}")
        await wait(interval)


def eventually_blocking(
    check: Callable[[], Any],
    what: str = "the condition",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.2,
    tolerate: tuple[type[BaseException], ...] = (),
) -> Any:
    """``eventually`` for a test that is not async."""
    return asyncio.run(
        eventually(check, what, timeout=timeout, interval=interval, tolerate=tolerate)
    )
