"""What an agent hook may use of the running agent: ``Protocol`` types, so a hook (sync, the
local HTTP API: ``Agent.add_task(fn)``, called as ``fn(agent, stop)``) is written against
these and not against ``agent.daemon.Agent``, the class that starts the hooks.

``agent.daemon.Agent`` satisfies ``AgentContext``; mypy checks it where the daemon hands
itself to its hooks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from agent.config import AgentConfig
from agent.store import Store

if TYPE_CHECKING:
    from agent.runtime.base import Engine


class Reconciler(Protocol):
    """What the daemon needs from the reconcile loop."""

    async def run(self, stop: asyncio.Event) -> None: ...

    def poke(self, reason: str) -> None:
        """Ask for a reconcile soon (desired state changed, an operator asked, ...)."""
        ...


class AgentContext(Protocol):
    """The running agent as a hook sees it."""

    # Set by the sync hook once the service runs (None before, or without a hub); read by
    # the local API for the hub link. Any: the HTTP side reads it duck-typed on purpose.
    sync: Any

    @property
    def config(self) -> AgentConfig: ...

    @property
    def store(self) -> Store | None: ...

    @property
    def engine(self) -> Engine | None: ...

    @property
    def reconciler(self) -> Reconciler | None: ...

    @property
    def reconcile_loop(self) -> Any:
        """The concrete reconcile loop, for status readers (None until the engine answers)."""
        ...

    @property
    def device_id(self) -> str: ...

    def notify_desired(self, reason: str = "desired") -> None:
        """An in-process writer put a desired state into the store: look now."""
        ...


Hook = Callable[[AgentContext, asyncio.Event], Coroutine[Any, Any, None]]
