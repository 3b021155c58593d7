"""Device RPC: ``sb.dev.<id>.rpc.<verb>``, request ``RpcRequest`` body, reply ``RpcReply`` body
(a result object or the error shape)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from protocol import SCHEMA_VERSION
from protocol.codec import Fields, dumps, load
from protocol.errors import TOO_LARGE, MessageError, RemoteError

MAX_RPC_REQUEST_BYTES = 16 * 1024
MAX_RPC_REPLY_BYTES = 768 * 1024  # a logs tail; below NATS' default 1 MiB max_payload
MAX_LOG_TAIL = 5000
DEFAULT_LOG_TAIL = 100

RPC_VERBS: tuple[str, ...] = ("reconcile", "restart", "logs", "status")

_CONTAINER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class RpcRequest:
    """``verb`` comes from the subject ``sb.dev.<id>.rpc.<verb>``; ``args`` from the body.

    Arguments per verb: ``reconcile`` none; ``restart`` ``{container}``; ``logs``
    ``{container, tail}`` (tail 1..5000, default 100); ``status`` none.
    """

    verb: str
    container: str | None = None
    tail: int | None = None

    def to_json(self) -> bytes:
        args: dict[str, Any] = {}
        if self.container is not None:
            args["container"] = self.container
        if self.tail is not None:
            args["tail"] = self.tail
        return dumps({"v": SCHEMA_VERSION, "args": args})


def decode_rpc_request(verb: str, data: bytes | str) -> RpcRequest:
    if verb not in RPC_VERBS:
        raise MessageError("verb", f"unknown verb {verb!r}; known: {', '.join(RPC_VERBS)}")
    doc = Fields(load(data, MAX_RPC_REQUEST_BYTES), "")
    args = doc.obj("args", required=False) or Fields({}, "args")
    container = tail = None
    if verb in ("restart", "logs"):
        container = args.str_(
            "container", max_len=128, pattern=_CONTAINER_RE, what="a container name"
        )
    if verb == "logs":
        tail = args.int_("tail", required=False, lo=1, hi=MAX_LOG_TAIL) or DEFAULT_LOG_TAIL
    return RpcRequest(verb, container, tail)


@dataclass(frozen=True)
class RpcReply:
    """Either ``result`` (an object) or ``error`` (``{code, message, field?}``)."""

    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def raise_for_error(self) -> dict[str, Any]:
        if self.error is not None:
            raise RemoteError(
                str(self.error.get("code")), str(self.error.get("message")), self.error.get("field")
            )
        return self.result or {}

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {"v": SCHEMA_VERSION}
        if self.error is not None:
            doc["error"] = self.error
        else:
            doc["result"] = self.result or {}
        body = dumps(doc)
        if len(body) > MAX_RPC_REPLY_BYTES:
            return rpc_error(TOO_LARGE, f"reply is {len(body)} bytes, limit {MAX_RPC_REPLY_BYTES}")
        return body


def rpc_ok(result: dict[str, Any]) -> bytes:
    return RpcReply(result=result).to_json()


def rpc_error(code: str, message: str, field: str | None = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        err["field"] = field
    return dumps({"v": SCHEMA_VERSION, "error": err})


def decode_rpc_reply(data: bytes | str) -> RpcReply:
    doc = Fields(load(data, MAX_RPC_REPLY_BYTES), "")
    err = doc.obj("error", required=False)
    if err is not None:
        return RpcReply(
            error={
                "code": err.str_("code", max_len=64),
                "message": err.str_("message", max_len=4096),
                **({"field": f} if (f := err.str_("field", required=False)) else {}),
            }
        )
    result = doc.obj("result")
    assert result is not None
    return RpcReply(result=result.doc)
