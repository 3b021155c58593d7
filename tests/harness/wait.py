"""The one way tests wait for a condition: ``eventually``.

Bounded in time, never a bare sleep: the check is polled until its value is truthy and that
value is returned; past ``timeout`` an AssertionError names ``what`` (and the last error a
tolerated exception gave). The check may be a plain function or return an awaitable. Bounds
are generous (tens of seconds): the suite runs on shared, loaded machines, so a deadline
marks a hang, not a speed.

``eventually_blocking`` is the same loop for a test that is not async (its check may start
an event loop of its own, as a CLI verb does, so it runs none).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

DEFAULT_TIMEOUT = 60.0
Pause = Callable[[float], Awaitable[Any]]


class _Poll:
    """One polling run's rules, shared by both loops: a truthy value ends it, a tolerated
    exception counts as "not yet", and past the deadline an AssertionError names ``what``."""

    def __init__(
        self, what: str, timeout: float, tolerate: tuple[type[BaseException], ...]
    ) -> None:
        if not isinstance(what, str):
            raise TypeError(f"what must be a text, not {what!r} (timeout is keyword-only)")
        self.what, self.timeout, self.tolerate = what, timeout, tolerate
        self.deadline = time.monotonic() + timeout
        self.last: BaseException | None = None

    def overdue(self) -> None:
        if time.monotonic() > self.deadline:
            detail = f" (last error: {self.last!r})" if self.last is not None else ""
            raise AssertionError(f"not met in {self.timeout:g}s: {self.what}{detail}")


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
    poll = _Poll(what, timeout, tolerate)
    wait = pause or asyncio.sleep
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except tolerate as exc:
            poll.last = exc
        poll.overdue()
        await wait(interval)


def eventually_blocking(
    check: Callable[[], Any],
    what: str = "the condition",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.2,
    tolerate: tuple[type[BaseException], ...] = (),
) -> Any:
    """``eventually`` for a test that is not async. No event loop of its own: the check may
    run code that starts one (a CLI verb's ``asyncio.run``)."""
    poll = _Poll(what, timeout, tolerate)
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                raise TypeError(f"{what}: an async check needs `await eventually(...)`")
            if value:
                return value
        except tolerate as exc:
            poll.last = exc
        poll.overdue()
        time.sleep(interval)
