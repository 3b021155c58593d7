"""Remote commands: the operator API verbs that forward to ``sb.dev.<id>.rpc.<verb>``.

The request travels through the device's leaf link. No responders means the link is down
(the hub's server knows the leaf's subscriptions): the caller gets ``device_offline`` at
once, naming when the device was last seen, never a hang. A device that does not answer
within the timeout gets ``unavailable``; a device's own error reply is passed through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS

from hub.api.handlers import Caller, Outcome
from hub.api.validate import device_id as valid_device_id
from hub.errors import DeviceError, DeviceOffline, Invalid, NotFound, Unavailable
from hub.metrics import HubMetrics
from hub.store import Store
from protocol.api import DEVICE_WAIT, MAX_DEVICE_WAIT, device_wait
from protocol.errors import MessageError
from protocol.rpc import RpcRequest, decode_rpc_reply, decode_rpc_request
from protocol.subjects import rpc

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = DEVICE_WAIT
MAX_TIMEOUT = MAX_DEVICE_WAIT
StoreCall = Callable[..., Awaitable[Any]]


def _ago(stamp: str | None) -> str:
    if not stamp:
        return "never"
    try:
        then = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    except ValueError:
        return stamp
    secs = max(0, int(time.time() - then))
    if secs < 120:
        return f"{stamp}, {secs} s ago"
    if secs < 7200:
        return f"{stamp}, {secs // 60} min ago"
    return f"{stamp}, {secs // 3600} h ago"


class DeviceRpc:
    def __init__(self, nc: NATS, store: Store, call: StoreCall, metrics: HubMetrics) -> None:
        self.nc = nc
        self.store = store
        self.call = call
        self.metrics = metrics

    async def request(
        self, device_id: str, req: RpcRequest, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """Send one RPC and return its result, or raise the matching ``HubError``."""
        seen = await self.call(self.store.device_last_seen, device_id)
        if seen is None:
            raise NotFound(f"no device {device_id!r}", field="id")
        try:
            msg = await self.nc.request(rpc(device_id, req.verb), req.to_json(), timeout=timeout)
        except nats.errors.NoRespondersError:
            self.metrics.device_rpc.labels(req.verb, "device_offline").inc()
            raise DeviceOffline(
                f"device {device_id} is offline (last seen {_ago(seen[1])})"
            ) from None
        except (nats.errors.TimeoutError, TimeoutError):
            self.metrics.device_rpc.labels(req.verb, "timeout").inc()
            raise Unavailable(f"device {device_id} did not answer within {timeout:g} s") from None
        try:
            reply = decode_rpc_reply(msg.data)
        except MessageError as exc:
            self.metrics.device_rpc.labels(req.verb, "bad_reply").inc()
            log.warning("malformed %s reply: %s", req.verb, exc, extra={"device": device_id})
            raise Unavailable(f"device {device_id} sent a malformed reply: {exc}") from None
        if reply.error is not None:
            code = str(reply.error.get("code", "internal"))
            self.metrics.device_rpc.labels(req.verb, code).inc()
            raise DeviceError(
                code, f"device {device_id}: {reply.error.get('message')}", reply.error.get("field")
            )
        self.metrics.device_rpc.labels(req.verb, "ok").inc()
        return reply.result or {}

    # --- API verbs -----------------------------------------------------------------------
    def handlers(self) -> dict[str, Callable[[dict[str, Any], Caller], Awaitable[Outcome]]]:
        return {
            "devices.logs": self._verb("logs"),
            "devices.restart": self._verb("restart"),
            "devices.reconcile": self._verb("reconcile"),
            "devices.status": self._verb("status"),
        }

    def _verb(self, verb: str) -> Callable[[dict[str, Any], Caller], Awaitable[Outcome]]:
        async def handler(body: dict[str, Any], caller: Caller) -> Outcome:
            device_id = valid_device_id(body["id"])
            # A restart's default covers the container's stop timeout (protocol.api).
            timeout = body.get("timeout", device_wait(verb))
            if not 1 <= timeout <= MAX_TIMEOUT:
                raise Invalid(f"timeout must be 1-{MAX_TIMEOUT} seconds", field="timeout")
            tail = body.get("tail")
            if tail is not None and not 1 <= tail <= 5000:
                raise Invalid("tail must be 1-5000", field="tail")
            req = RpcRequest(verb, body.get("container"), tail)
            try:
                # The device validates again; this turns a bad name into a clear field error.
                decode_rpc_request(verb, req.to_json())
            except MessageError as exc:
                raise Invalid(exc.message, field=exc.field.removeprefix("args.")) from None
            if verb in ("restart", "reconcile"):
                # The audit line; the device records the action in its own event log too.
                log.info(
                    "rpc %s %s by key %s (%s)",
                    verb,
                    body.get("container") or "",
                    caller.name,
                    caller.key_id,
                    extra={"device": device_id},
                )
            result = await self.request(device_id, req, float(timeout))
            return Outcome({"id": device_id, "verb": verb, "result": result})

        return handler
