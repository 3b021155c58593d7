"""The TUI's long-lived hub connection, wrapped around ``tui.client.HubClient``.

Why a wrapper: ``HubClient`` fails fast (the CLI's need) or, with ``reconnect=True``, makes
nats-py retry the *first* connect forever, so an unreachable hub would hang the UI with no
message. Here the first connect fails fast with the client's own clear error, then the
session keeps a NATS connection that reconnects forever and reports link changes, which
``HubClient`` has no callbacks for.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.subscription import Subscription

from protocol import errors as codes
from protocol import natsauth
from protocol.subjects import INBOX_OPERATOR
from sbutil.tasks import wait_for
from tui.client import (
    ApiError,
    HubClient,
    connect_error,
    ensure_tls,
    redact,
    split_urls,
    tls_options,
)

LinkCallback = Callable[[bool], Awaitable[None]]


class HubSession:
    def __init__(
        self, url: str, api_key: str | None, timeout: float = 5.0, ca_file: str | None = None
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.timeout = timeout
        self.ca_file = ca_file
        self.client = HubClient(url, api_key, timeout=timeout, reconnect=True, ca_file=ca_file)
        self.on_link: LinkCallback | None = None
        self._sub: Subscription | None = None

    @property
    def display_url(self) -> str:
        """The URL for the header and messages: no user or password (the one in use, and
        how many others a cluster's list holds)."""
        nc = self.client.nc
        url = self.client.url
        if nc is not None and nc.is_connected and nc.connected_url is not None:
            live = nc.connected_url.geturl()
            url = next((u for u in self.client.urls if _same_server(u, live)), url)
        more = len(self.client.urls) - 1
        return re.sub(r"//[^/@]*@", "//", redact(url)) + (f" (+{more})" if more else "")

    @property
    def connected(self) -> bool:
        nc = self.client.nc
        return nc is not None and nc.is_connected

    async def open(self) -> None:
        """Connect and check the key with one read; ``ApiError`` with the hub's reason."""
        probe = HubClient(
            self.url, self.api_key, timeout=self.timeout, reconnect=False, ca_file=self.ca_file
        )
        await probe.connect()  # raises ApiError(unavailable, "cannot connect to the hub at …")
        try:
            await probe.call("devices.list", {"limit": 1})
        finally:
            await probe.close()
        # Every URL, the one the probe reached first: nats-py moves the link to the next
        # when its node dies (the TUI's requests then ride out the gap: HubClient.call).
        urls = split_urls(self.url)
        first = probe.url
        servers = [first, *(u for u in urls if u != first)]
        try:
            # Bounded: if the hub vanished since the probe, nats-py would retry forever.
            self.client.nc = await wait_for(
                nats.connect(
                    servers,
                    name="signalbeam-tui",
                    # The operator login receives replies only under this prefix (issue 19).
                    inbox_prefix=INBOX_OPERATOR,
                    connect_timeout=int(max(1, self.timeout)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    dont_randomize=True,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    error_cb=self._quiet,
                    **tls_options(first, self.ca_file),
                    # JWT mode: the URL's secret is the operator login's bearer JWT.
                    **natsauth.auth_options(first),
                ),
                timeout=self.timeout * 2,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise connect_error(first, self.ca_file, exc) from exc
        self.client.use(first)
        await ensure_tls(self.client.nc, first)

    async def _disconnected(self) -> None:
        if self.on_link is not None:
            await self.on_link(False)

    async def _reconnected(self) -> None:
        if self.on_link is not None:
            await self.on_link(True)

    async def _quiet(self, exc: Exception) -> None:
        # Link errors show as the header's connection state; nats-py's default handler would
        # log them over the terminal UI.
        return None

    async def call(self, verb: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if not self.connected:
            # Also before open(): HubClient.call would start a connect that retries forever.
            raise ApiError(
                codes.UNAVAILABLE, f"not connected to the hub at {self.display_url}; reconnecting"
            )
        return await self.client.call(verb, body)

    async def watch(self, callback: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Subscribe to every change notice; nats-py re-subscribes after a reconnect."""
        if self._sub is None:
            self._sub = await self.client.watch_changes(callback)

    async def close(self) -> None:
        self.on_link = None  # closing also fires nats-py's disconnected callback
        try:
            await self.client.close()
        except Exception:
            pass  # closing a half-broken link must not turn quitting into a traceback


def _same_server(url: str, live: str) -> bool:
    """Whether ``url`` (with credentials) names the server nats-py says it is on."""
    from urllib.parse import urlsplit

    a, b = urlsplit(url), urlsplit(live)
    return (a.hostname, a.port) == (b.hostname, b.port)
