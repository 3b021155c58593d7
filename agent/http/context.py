"""Everything the HTTP handlers depend on, in one object the daemon (or a test) builds.

Handlers reach the store, engine and reconcile loop only through ``AppContext``, so a test
can stand up the whole API against a real store file and a real engine without the daemon.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.config import AgentConfig
from agent.http.errors import ApiError
from agent.http.ratelimit import AuthFailureLimiter
from agent.http.tokens import TokenStore
from agent.runtime.base import Engine
from agent.store import Store
from bundles import MAX_BUNDLE_BYTES
from protocol import errors as perr


class ReconcileControl(Protocol):
    """What the API needs from the reconcile loop (``agent.reconcile.loop.ReconcileLoop``):
    ask for a run now. Its ``last_result`` (if it has one) shows in the status."""

    def trigger(self, reason: str) -> None: ...


@dataclass(frozen=True)
class HubLink:
    """The sync task's view of the hub link (``online`` None: no hub configured, neither a
    ``[hub] url`` nor an enrollment)."""

    online: bool | None
    last_contact: float | None = None  # wall clock of the hub's last answer
    started_at: float | None = None  # when sync started ("unreachable since" before any answer)


@dataclass(frozen=True)
class HttpLimits:
    # The largest body is a bundle document, and bundles refuse more than this anyway.
    client_max_size: int = MAX_BUNDLE_BYTES
    max_log_streams: int = 8  # concurrent follows; each holds an engine connection
    max_follow_seconds: float = 3600.0  # a forgotten browser tab must not stream forever
    keepalive_seconds: float = 1.0  # how often an idle follow checks that its client is there
    max_log_lines: int = 10_000  # tail bound for one non-follow request
    auth_max_failures: int = 10
    auth_window_seconds: float = 60.0


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("signalbeam-edge")
    except PackageNotFoundError:
        return "0.0.0+unknown"


@dataclass
class AppContext:
    config: AgentConfig
    store: Store
    tokens: TokenStore
    # Fixed objects (tests) or getters (the daemon connects its engine and starts the
    # reconcile loop after the API is up, and may reconnect).
    engine: Engine | None = None
    reconcile: ReconcileControl | None = None
    engine_getter: Callable[[], Engine | None] | None = None
    reconcile_getter: Callable[[], ReconcileControl | None] | None = None
    hub_link: Callable[[], HubLink] | None = None
    limits: HttpLimits = field(default_factory=HttpLimits)
    version: str = field(default_factory=_package_version)
    started_wall: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)
    tls_fingerprint: str | None = None
    # Set by build_app; the app owns their lifetimes.
    limiter: AuthFailureLimiter = field(init=False)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.limiter = AuthFailureLimiter(
            self.limits.auth_max_failures, self.limits.auth_window_seconds
        )

    @property
    def device_id(self) -> str:
        return self.store.device_id

    def current_engine(self) -> Engine | None:
        return self.engine_getter() if self.engine_getter is not None else self.engine

    def get_engine(self) -> Engine:
        engine = self.current_engine()
        if engine is None:
            raise ApiError(perr.UNAVAILABLE, "the container engine is not connected (yet)")
        return engine

    def current_reconcile(self) -> ReconcileControl | None:
        if self.reconcile_getter is not None:
            return self.reconcile_getter()
        return self.reconcile

    def uptime(self) -> float:
        return time.monotonic() - self.started_mono

    def hub(self) -> HubLink:
        if self.hub_link is None:
            return HubLink(online=None if self.config.hub.url is None else False)
        return self.hub_link()
