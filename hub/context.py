"""What a hub plug-in may use of the hub: ``Protocol`` types, so a component is written
against these and not against ``hub.app.Hub`` (which imports the components: the import
circles ``hub.app`` <-> ``hub.retention`` / ``hub.sync.service`` this module removed).

A component (``Hub.components``; sync and the rollout controller are started the same way)
has async ``start(hub: HubContext)`` and ``stop()``. ``hub.app.Hub`` satisfies
``HubContext``; mypy checks that where the hub hands itself over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from nats.aio.client import Client as NATS

from hub.api.service import ApiService
from hub.bus import EventBus
from hub.config import HubConfig, Secrets
from hub.metrics import HubMetrics
from hub.natsjwt import HubKeys
from hub.store import Store

T = TypeVar("T")

# hub.sync.apply.RowHandler's shape: called inside the ingest transaction with a device's
# newly applied report rows (in seq order).
RowHook = Callable[[Store, str, Sequence[Any]], None]


class DesiredPublisher(Protocol):
    """The sync side's desired writer (``hub.sync.desired_kv.DesiredWriter``)."""

    def publish(
        self,
        device_ids: Iterable[str] | None = None,
        *,
        force: bool = False,
        prompt: bool = False,
    ) -> Awaitable[Any]: ...


class SyncHooks(Protocol):
    """What a plug-in may use of the sync side (``hub.sync.service.SyncService``)."""

    @property
    def desired(self) -> DesiredPublisher | None: ...

    @property
    def row_handlers(self) -> list[RowHook]: ...


class Component(Protocol):
    async def start(self, hub: HubContext) -> None: ...

    async def stop(self) -> None: ...


class HubContext(Protocol):
    """The hub as a component sees it. Read-only here: a component never replaces parts."""

    @property
    def cfg(self) -> HubConfig: ...

    # The shared logins (the bootstrap one goes to devices in renewal replies).
    @property
    def sec(self) -> Secrets: ...

    @property
    def metrics(self) -> HubMetrics: ...

    @property
    def bus(self) -> EventBus: ...

    @property
    def store(self) -> Store | None: ...

    @property
    def nc(self) -> NATS | None: ...

    @property
    def api(self) -> ApiService | None: ...

    # The trust chain's keys (hub/natsjwt.py), and in JWT mode the system-account login
    # that pushes account JWTs (None in password mode).
    @property
    def keys(self) -> HubKeys | None: ...

    @property
    def sys_nc(self) -> NATS | None: ...

    @property
    def sync(self) -> SyncHooks: ...

    @property
    def components(self) -> list[Component]: ...

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store's single writer thread."""
        ...

    async def reload_device_users(self) -> None:
        """Regenerate the device NATS users from the store and reload nats-server."""
        ...
