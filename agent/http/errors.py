"""HTTP errors in the one shared shape, and the middleware that forces every error into it.

Handlers raise ``ApiError``; aiohttp's own 404/405/413 arrive as ``web.HTTPException`` and
are rewritten here, so a client never has to parse two error formats.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    ContentLengthError,
    HttpProcessingError,
    TransferEncodingError,
)
from aiohttp.web_protocol import RequestPayloadError

from agent.errors import EngineError, StoreFull
from agent.store import space
from protocol import errors as perr

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Set by build_app: log lines about a request name the device, and this module stays a leaf.
DEVICE_KEY: web.AppKey[str] = web.AppKey("device", str)

_STATUS_CODE = {
    400: perr.BAD_REQUEST,
    401: perr.UNAUTHORIZED,
    403: perr.FORBIDDEN,
    404: perr.NOT_FOUND,
    405: perr.METHOD_NOT_ALLOWED,
    409: perr.CONFLICT,
    413: perr.TOO_LARGE,
    422: perr.INVALID,
    429: perr.RATE_LIMITED,
    503: perr.UNAVAILABLE,
    504: perr.DEVICE_OFFLINE,
    507: perr.INSUFFICIENT_STORAGE,
}


class ApiError(Exception):
    """An error a handler reports to the client; ``code`` is one of ``protocol.errors``."""

    def __init__(
        self,
        code: str,
        message: str,
        field: str | None = None,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.details = details
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return perr.HTTP_STATUS.get(self.code, 500)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":"), default=str).encode(),
        content_type="application/json",
        headers=headers,
    )


def error_response(err: ApiError) -> web.Response:
    body = perr.error_body(err.code, err.message, err.field, err.details)
    return json_response(body, err.status, err.headers)


def _from_http_exception(exc: web.HTTPException, request: web.Request) -> ApiError:
    code = _STATUS_CODE.get(exc.status, perr.BAD_REQUEST if exc.status < 500 else perr.INTERNAL)
    headers: dict[str, str] = {}
    if exc.status == 405:
        headers["Allow"] = exc.headers.get("Allow", "")
        message = f"{request.method} is not allowed on {request.path}"
    elif exc.status == 404:
        message = f"no such endpoint: {request.path}"
    elif exc.status == 413:
        message = "request body too large"
    else:
        message = exc.reason or "request failed"
    return ApiError(code, message, headers=headers)


def _body_reason(exc: BaseException) -> str:
    # Named by kind: the parsers' own messages quote the body's bytes.
    cause = exc.__cause__ if isinstance(exc, RequestPayloadError) else exc
    if isinstance(cause, TransferEncodingError) or (
        isinstance(cause, HttpProcessingError) and "chunk" in cause.message.lower()
    ):
        return "bad chunked transfer encoding"
    if isinstance(cause, ContentLengthError):
        return "the body is shorter than its Content-Length"
    return "it could not be read"


def _where(request: web.Request) -> dict[str, Any]:
    return {"device": request.app.get(DEVICE_KEY), "path": request.path, "method": request.method}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and 2xx raised as exceptions are not errors
        return error_response(_from_http_exception(exc, request))
    except ConnectionResetError:
        # The client went away mid-response: nothing to answer, nothing wrong on our side.
        raise
    except (RequestPayloadError, HttpProcessingError) as exc:
        # The body broke off or was malformed mid-stream (a bad chunk, a length that lies).
        # The client's fault, and the connection cannot carry another request.
        text = f"malformed request body: {_body_reason(exc)}"
        log.info("%s", text, extra=_where(request))
        resp = error_response(ApiError(perr.BAD_REQUEST, text))
        resp.force_close()
        return resp
    except EngineError as exc:
        log.warning("engine call failed: %s", exc, extra=_where(request))
        return error_response(ApiError(perr.UNAVAILABLE, f"container engine: {exc}"))
    except Exception as exc:
        if isinstance(exc, StoreFull) or space.is_space_error(exc):
            # Not a bug: the disk (agent store or token file) is full; the write was rolled
            # back. 507 with the reason, so a technician knows what to free.
            log.warning("write refused, disk full: %s", exc, extra=_where(request))
            message = str(exc) if isinstance(exc, StoreFull) else f"disk full: {exc}"
            return error_response(ApiError(perr.INSUFFICIENT_STORAGE, message))
        log.exception("request failed", extra=_where(request))
        return error_response(ApiError(perr.INTERNAL, "internal error"))
