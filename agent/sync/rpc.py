"""Device RPC: request/reply on ``sb.dev.<id>.rpc.<verb>`` served through the leaf.

Every request is validated (``protocol.rpc.decode_rpc_request``); every reply is either
``{"v":1,"result":{...}}`` or ``{"v":1,"error":{"code","message","field"?}}`` with codes from
``protocol.errors``. A handler's failure becomes an error reply and a count, never a crash.
The daemon supplies the work as callbacks (``RpcHandlers``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from agent.errors import AgentError, EngineError
from agent.sync.errors import RpcFailure
from protocol.errors import INTERNAL, UNAVAILABLE, MessageError
from protocol.rpc import MAX_RPC_REPLY_BYTES, RpcRequest, decode_rpc_request, rpc_error, rpc_ok
from protocol.subjects import rpc
from sbutil.tasks import wait_for

log = logging.getLogger(__name__)

MaybeAwaitable = Any


@dataclass(frozen=True)
class RpcHandlers:
    """Callbacks (sync or async). Each returns a JSON-able dict (``logs``: a list of lines)."""

    reconcile: Callable[[], MaybeAwaitable]
    restart: Callable[[str], MaybeAwaitable]
    logs: Callable[[str, int], MaybeAwaitable]
    status: Callable[[], MaybeAwaitable]


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def fit_lines(lines: list[str], budget: int = MAX_RPC_REPLY_BYTES - 4096) -> tuple[list[str], bool]:
    """The newest lines whose JSON fits ``budget`` bytes (a logs reply must fit one message)."""
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        size = len(json.dumps(line)) + 1
        if used + size > budget:
            return kept[::-1], True
        kept.append(line)
        used += size
    return kept[::-1], False


class RpcServer:
    def __init__(
        self, nc: NATS, device_id: str, handlers: RpcHandlers, *, timeout: float = 30.0
    ) -> None:
        self.nc = nc
        self.device_id = device_id
        self.handlers = handlers
        self.timeout = timeout
        self.counts: Counter[str] = Counter()
        self._sub: Subscription | None = None
        self._extra = {"device": device_id}

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(rpc(self.device_id, "*"), cb=self._on_msg)

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:
                pass
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        if not msg.reply:
            self.counts["no_reply_subject"] += 1
            return
        # Handlers may be slow (logs, restart): answer from a task so requests don't queue.
        asyncio.get_running_loop().create_task(self._answer(msg))

    async def _answer(self, msg: Msg) -> None:
        verb = msg.subject.rsplit(".", 1)[-1]
        body = await self.handle(verb, msg.data)
        try:
            await self.nc.publish(msg.reply, body)
        except Exception as exc:
            self.counts["reply_failed"] += 1
            log.warning("rpc %s: reply not sent: %s", verb, exc, extra=self._extra)

    async def handle(self, verb: str, data: bytes) -> bytes:
        """Decode, dispatch and encode one request (public for tests and the HTTP API)."""
        try:
            req = decode_rpc_request(verb, data)
        except MessageError as exc:
            self.counts["invalid"] += 1
            log.warning("rpc %s: invalid request: %s", verb[:32], exc, extra=self._extra)
            return rpc_error(exc.code, exc.message, exc.field)
        try:
            result = await wait_for(self._dispatch(req), self.timeout)
        except RpcFailure as exc:
            self.counts["failed"] += 1
            return rpc_error(exc.code, exc.message, exc.field)
        except EngineError as exc:
            self.counts["failed"] += 1
            return rpc_error(UNAVAILABLE, f"container engine: {exc}")
        except AgentError as exc:
            self.counts["failed"] += 1
            return rpc_error(INTERNAL, str(exc))
        except TimeoutError:
            self.counts["failed"] += 1
            return rpc_error(UNAVAILABLE, f"{verb} did not finish within {self.timeout}s")
        except Exception as exc:
            self.counts["failed"] += 1
            log.exception("rpc %s failed", verb, extra=self._extra)
            return rpc_error(INTERNAL, f"{type(exc).__name__}: {exc}")
        self.counts[verb] += 1
        return rpc_ok(result)

    async def _dispatch(self, req: RpcRequest) -> dict[str, Any]:
        h = self.handlers
        if req.verb == "reconcile":
            out = await _call(h.reconcile)
        elif req.verb == "restart":
            out = await _call(h.restart, req.container)
        elif req.verb == "logs":
            lines, truncated = fit_lines(
                [str(x) for x in await _call(h.logs, req.container, req.tail)]
            )
            out = {"container": req.container, "lines": lines, "truncated": truncated}
        else:
            out = await _call(h.status)
        return dict(out or {})
