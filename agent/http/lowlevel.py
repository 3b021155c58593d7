"""Requests aiohttp refuses before any handler runs, answered in the one JSON error shape.

A request that does not parse (too many headers, a header or URL over 8190 bytes, a bad
request line, conflicting Content-Length/Transfer-Encoding, a bad chunk size...) never
reaches the app's middlewares: aiohttp's protocol object answers it itself, in
``RequestHandler.handle_error``, as ``text/plain`` with the offending bytes echoed back.
aiohttp has no public hook for that answer (aio-libs/aiohttp#3287), so the runner builds
its server with a request handler whose ``handle_error`` speaks the API's shape instead.

The reason given (to the client and in the log) is the parser's own words without the raw
request bytes it quotes: a malformed Authorization line would otherwise put a token in the
log, which the API promises never to do.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from agent.http.errors import ApiError, error_response
from protocol import errors as perr

log = logging.getLogger(__name__)

MAX_REASON = 200
# Lines of aiohttp's messages that quote the request itself: b'...', bytearray(b'...'), or
# the caret under the offending byte.
_QUOTED = re.compile(r"^(b'|b\"|bytearray\(|\^)")


def reason(exc: BaseException | None, status: int) -> str:
    """What was wrong with the request, in words, without echoing what the client sent."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else "the limit of"
        return f"the request line or a header is longer than {limit} bytes"
    if isinstance(exc, BadHttpMethod):
        if "HTTPS" in exc.message:
            return "received HTTPS (TLS) on a plain HTTP port"
        return "not an HTTP request (invalid method in the request line)"
    if isinstance(exc, HttpProcessingError) and exc.message:
        parts = [
            line.strip().rstrip(":")
            for line in exc.message.splitlines()
            if line.strip() and not _QUOTED.match(line.strip())
        ]
        text = ": ".join(p for p in parts if p)
        if text:
            return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "request failed"


def _code(status: int) -> str:
    if status == 413:
        return perr.TOO_LARGE
    if 400 <= status < 500:
        return perr.BAD_REQUEST
    return perr.UNAVAILABLE if status == 503 else perr.INTERNAL


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection protocol, with its own error answers in the API's shape."""

    def data_received(self, data: bytes) -> None:
        # aiohttp's C parser, finding a bad chunk size in a body it is streaming to a
        # handler, queues the error as the connection's next message but never fails the
        # body: the handler would wait on it until the client hangs up (its Python parser
        # fails the body, as it should). Fail it here the same way, so the handler's read
        # raises and the request is answered 400 by the error middleware.
        request = getattr(self, "_current_request", None)
        messages = getattr(self, "_messages", None)
        queued = len(messages) if messages is not None else 0
        super().data_received(data)
        if request is None or messages is None or len(messages) <= queued:
            return
        for msg, _ in list(messages)[queued:]:
            err = getattr(msg, "exc", None)
            if isinstance(err, HttpProcessingError) and not request.content.is_eof():
                request.content.set_exception(RequestPayloadError(reason(err, 400)), err)
                break

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, ConnectionError):
            # The client went away mid-request (the error middleware lets this through):
            # nobody is left to answer, and nothing is wrong on our side.
            log.debug("client %s went away: %r", request.remote, exc)
            text = "connection lost"
        elif status >= 500:
            # A handler bug that escaped the error middleware: the traceback is for the log.
            log.error(
                "request failed outside the error middleware",
                exc_info=exc,
                extra={"client": request.remote},
            )
            text = "internal error"
        else:
            text = f"malformed request: {reason(exc, status)}"
            # Routine on any port a scanner reaches: one line, no traceback, no raw bytes.
            log.info("refused a malformed request from %s: %s", request.remote, text)
        if request.writer.output_size > 0:
            # Part of a response went out already: the connection cannot carry another.
            raise ConnectionError("response already started; cannot send the error")
        err = ApiError(_code(status), text)
        resp = error_response(err)
        resp.set_status(status)  # keep aiohttp's status (400, 413, 431...) exactly
        resp.force_close()
        return resp


class JsonErrorServer(web.Server):
    """``web.Server`` whose connections use ``JsonErrorRequestHandler``."""

    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorAppRunner(web.AppRunner):
    """``web.AppRunner`` serving through ``JsonErrorServer``.

    ``_make_server`` is the runner's documented extension point (AppRunner and ServerRunner
    differ only there); the app's own server is built as usual, then given the subclass,
    which only changes the protocol objects it creates.
    """

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = JsonErrorServer
        return server
