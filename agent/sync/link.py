"""The agent's view of its hub link: one NATS connection plus online/offline tracking.

The agent talks to its local leaf nats-server, whose connection almost never drops; what
drops is the leaf's link to the hub, which the client cannot see. So "online" means "a hub
round trip succeeded recently" (a PubAck, a KV reply, a watch delivery) and "offline" means
"the last one failed" (no responders, timeout). ``epoch`` counts offline->online transitions
so long-lived subscriptions (the KV watch) know to re-create themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import nats
from nats.aio.client import Client as NATS

from protocol import natstls
from protocol.subjects import device_inbox
from sbutil.tasks import wait_for

log = logging.getLogger(__name__)


def inbox_prefix(device_id: str) -> str:
    """Per-device reply inboxes, so the hub can let a device subscribe only to its own."""
    return device_inbox(device_id)


async def connect(
    url: str,
    device_id: str,
    *,
    user: str | None = None,
    password: str | None = None,
    name: str | None = None,
    ca_file: str | None = None,
    auth: dict[str, Any] | None = None,
    more_urls: Sequence[str] = (),
) -> NATS:
    """Connect with infinite reconnect (the default gives up after 60 tries).

    ``more_urls``: a hub NATS cluster's other nodes (direct mode), tried after ``url`` and
    on reconnect, so the device fails over when the node it uses dies.

    ``ca_file`` pins the hub's CA for a direct connection to a TLS hub (``[hub] ca_file``);
    a ``tls://`` URL must end up on TLS, never nats-py's silent plain fallback."""
    extra: dict[str, Any] = {}
    if user is not None:
        extra["user"] = user
        extra["password"] = password or ""
    extra.update(auth or {})  # JWT mode: the device's JWT and nonce signature callbacks
    if ca_file is not None or natstls.wants_tls(url):
        extra["tls"] = natstls.client_context(ca_file)

    async def on_error(exc: Exception) -> None:
        # nats-py reports background failures here (e.g. an ordered consumer that could not be
        # re-created while the link is down); they are expected offline, so debug level.
        log.debug("nats: %s", exc, extra={"device": device_id})

    async def on_disconnect() -> None:
        log.info("disconnected from local NATS server %s", url, extra={"device": device_id})

    async def on_reconnect() -> None:
        log.info("reconnected to local NATS server %s", url, extra={"device": device_id})

    servers = [url, *(u for u in more_urls if u != url)]
    nc = await nats.connect(
        servers if len(servers) > 1 else url,
        name=name or f"signalbeam-agent {device_id}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        allow_reconnect=True,
        inbox_prefix=inbox_prefix(device_id),
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        **extra,
    )
    if natstls.wants_tls(url) and not natstls.is_tls(nc):
        await nc.close()
        raise ConnectionError(f"{url.split('@')[-1]} did not offer TLS; refusing a plain link")
    return nc


class LinkState:
    """Online/offline as last observed, with the time of the last hub contact."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.online = False
        self.epoch = 0
        self.last_contact: float | None = None  # wall clock of the last successful round trip
        self.last_error: str | None = None
        self._online_event = asyncio.Event()

    def contact(self) -> None:
        self.last_contact = time.time()
        self.last_error = None
        if not self.online:
            self.online = True
            self.epoch += 1
            self._online_event.set()
            log.info("hub link up", extra={"device": self.device_id})

    def lost(self, reason: str) -> None:
        self.last_error = reason
        if self.online:
            self.online = False
            self._online_event.clear()
            log.warning("hub link down: %s", reason, extra={"device": self.device_id})

    async def wait_online(self, timeout: float) -> bool:
        """True once online, False after ``timeout`` seconds."""
        if self.online:
            return True
        try:
            await wait_for(self._online_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "online": self.online,
            "last_contact": self.last_contact,
            "last_error": self.last_error,
        }
