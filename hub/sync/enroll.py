"""Enrollment on ``sb.hub.enroll``: a registration token traded for the device's own NATS user.

The request comes from the bootstrap user ``enroll`` (it may publish only this subject).
In one store transaction: refuse a device id that is already enrolled (unless decommissioned,
or an operator approved a re-enrollment with ``devices.approve_reenroll``), use the token
once (tenant, expiry, max uses: a refusal stores nothing, not even the use), create or
refresh the device with its facts and tags, reset its sync position (a re-enrolled device
starts a fresh outbox at seq 1) and store its new NATS password. Then the nats-server config
is regenerated with the device's user and reloaded (other connections stay up), the device's
desired document is written (so its first read finds one), and the reply carries the
credentials, the leaf URL and the JetStream domain.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hub.api.validate import NAME_RE, NAME_RULE
from hub.errors import Conflict, HubError, Invalid
from hub.metrics import HubMetrics
from hub.natsconf import RESERVED_USERS
from hub.store import Store
from protocol.messages import (
    EnrollReply,
    EnrollRequest,
    MessageError,
    decode_enroll_request,
    rpc_error,
)
from protocol.subjects import ENROLL, JS_DOMAIN

log = logging.getLogger(__name__)

QUEUE = "hub-enroll"
StoreCall = Callable[..., Awaitable[Any]]


def normalise_tags(tags: tuple[str, ...]) -> list[str]:
    """The agent allows A-Z and ':' in tags; the hub's names are lower case without ':'.
    Lower-case what can be; refuse the rest, naming the tag."""
    out = []
    for i, tag in enumerate(tags):
        low = tag.lower()
        if not NAME_RE.match(low):
            raise Invalid(f"tag {tag!r} {NAME_RULE}", field=f"tags[{i}]")
        out.append(low)
    return sorted(set(out))


def enroll_in_store(store: Store, req: EnrollRequest, password: str) -> dict[str, Any]:
    """The whole enrollment as one transaction; raises ``HubError`` with nothing stored."""
    device_id = req.device_id
    if device_id in RESERVED_USERS:
        raise Invalid(f"device id {device_id!r} is reserved", field="device_id")
    tags = normalise_tags(req.tags)
    with store.tx():
        state = store.device_enroll_state(device_id)
        again = state is not None
        if state is not None and not state["decommissioned"] and not state["reenroll_approved"]:
            raise Conflict(
                f"device {device_id!r} is already enrolled; an operator must approve a"
                f" re-enrollment (signalbeam device approve-reenroll {device_id}) or"
                " decommission it first",
                field="device_id",
            )
        tenant = store.consume_enrollment_token(req.token)
        f = req.facts
        store.upsert_device(
            device_id,
            tenant,
            hostname=f.hostname,
            arch=f.arch,
            os=f.os,
            engine=f.engine,
            agent_version=f.agent_version,
            tags=tags,
        )
        store.set_device_status(device_id, "offline")
        store.reset_device_sync(device_id)
        store.set_device_credentials(device_id, device_id, password)
        store.add_event(
            device_id,
            "enrolled",
            f"{'re-enrolled' if again else 'enrolled'} into tenant {tenant}",
            {"tenant": tenant, "facts": f.to_dict(), "tags": tags, "again": again},
        )
    return {"tenant": tenant, "again": again, "tags": tags}


class Enrollment:
    def __init__(
        self,
        nc: NATS,
        store: Store,
        call: StoreCall,
        metrics: HubMetrics,
        *,
        leaf_url: str,
        hub_url: str,
        reload_users: Callable[[], Awaitable[None]],
        after_enroll: Callable[[str, dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.nc = nc
        self.store = store
        self.call = call
        self.metrics = metrics
        self.leaf_url = leaf_url
        self.hub_url = hub_url
        self.reload_users = reload_users
        self.after_enroll = after_enroll
        self._sub: Subscription | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(ENROLL, queue=QUEUE, cb=self._on_msg)

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:
                pass

    async def _on_msg(self, msg: Msg) -> None:
        if not msg.reply:
            self.metrics.sync_bad.labels("enroll", "no_reply").inc()
            log.warning("enrollment published without a reply subject; ignored")
            return
        # One at a time: the config rewrite and reload must not interleave.
        async with self._lock:
            body = await self._enroll(msg.data)
        try:
            await msg.respond(body)
        except Exception as exc:
            log.warning("could not send the enrollment reply: %s", exc)

    async def _enroll(self, data: bytes) -> bytes:
        try:
            req = decode_enroll_request(data)
        except MessageError as exc:
            self.metrics.sync_bad.labels("enroll", exc.code).inc()
            return self._refuse(None, exc.code, f"{exc.field}: {exc.message}", exc.field)
        password = secrets.token_urlsafe(24)
        try:
            info = await self.call(enroll_in_store, self.store, req, password)
        except HubError as exc:
            return self._refuse(req.device_id, exc.code, exc.message, exc.field)
        await self.reload_users()
        self.metrics.enrollments.labels("ok").inc()
        log.info(
            "enrolled (tenant %s, tags %s)",
            info["tenant"],
            ",".join(info["tags"]) or "-",
            extra={"device": req.device_id},
        )
        try:
            await self.after_enroll(req.device_id, info)
        except Exception:
            log.warning(
                "post-enrollment step failed", exc_info=True, extra={"device": req.device_id}
            )
        return EnrollReply(
            req.device_id, req.device_id, password, self.leaf_url, self.hub_url, JS_DOMAIN
        ).to_json()

    def _refuse(self, device_id: str | None, code: str, message: str, field: str | None) -> bytes:
        # Counted and logged, never stored: a refused enrollment leaves no trace in the DB.
        self.metrics.enrollments.labels(code).inc()
        log.warning("enrollment refused: %s", message[:300], extra={"device": device_id})
        return rpc_error(code, message, field)
