"""``GET /v1/containers/{name}/logs``: a tail, or a follow stream (chunked text or SSE).

A follow ends when the container's log ends, when the client goes away, or after
``max_follow_seconds``; at most ``max_log_streams`` run at once. An idle follow wakes every
``keepalive_seconds`` to check its client (and, for SSE, to send a comment line), so a
vanished client frees its engine connection within about a second, not at the next log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator

from aiohttp import web

from agent.http import validate as v
from agent.http.auth import CTX_KEY
from agent.http.containers import find
from agent.http.errors import ApiError
from protocol import errors as perr

log = logging.getLogger(__name__)


class StreamTracker:
    """Counts live log streams; tests and /metrics read ``active``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.total = 0
        self.closing = False  # set at shutdown: open follows end at their next wake-up

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self.active >= self.limit:
            raise ApiError(
                perr.UNAVAILABLE,
                f"too many log streams open (limit {self.limit}); close one and retry",
                headers={"Retry-After": "5"},
            )
        self.active += 1
        self.total += 1
        try:
            yield
        finally:
            self.active -= 1


STREAMS_KEY: web.AppKey[StreamTracker] = web.AppKey("streams", StreamTracker)


def _sse(line: str) -> bytes:
    # One SSE event per log line; a line cannot contain a newline, so one data field.
    return b"data: " + line.encode("utf-8", "replace") + b"\n\n"


def _text(line: str) -> bytes:
    return line.encode("utf-8", "replace") + b"\n"


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _pump(
    request: web.Request,
    resp: web.StreamResponse,
    lines: AsyncIterator[str],
    *,
    sse: bool,
    keepalive: float,
    max_seconds: float,
    tracker: StreamTracker,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds
    encode = _sse if sse else _text
    pending: asyncio.Task[str] | None = None
    try:
        while not _gone(request) and not tracker.closing and loop.time() < deadline:
            if pending is None:
                pending = asyncio.ensure_future(anext(lines))
            done, _ = await asyncio.wait({pending}, timeout=keepalive)
            if not done:
                if sse:
                    await resp.write(b": keepalive\n\n")
                continue
            task, pending = pending, None
            try:
                line = task.result()
            except StopAsyncIteration:
                break
            for part in line.rstrip("\n").split("\n"):
                await resp.write(encode(part.rstrip("\r")))
    except ConnectionResetError:
        pass  # the client left while we wrote: the normal end of a follow
    except Exception as exc:
        # Headers are gone already, so the error travels in the stream and ends it.
        device = request.app[CTX_KEY].device_id
        log.warning("log stream failed: %s", exc, extra={"device": device, "path": request.path})
        with contextlib.suppress(ConnectionResetError):
            if sse:
                body = json.dumps(perr.error_body(perr.UNAVAILABLE, f"log stream: {exc}"))
                await resp.write(b"event: error\ndata: " + body.encode() + b"\n\n")
            else:
                await resp.write(_text(f"[signalbeam-agent: log stream failed: {exc}]"))
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.wait({pending})
        aclose = getattr(lines, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def get_logs(request: web.Request) -> web.StreamResponse:
    q = request.query
    v.only(q, ("tail", "follow", "since", "format"))
    ctx = request.app[CTX_KEY]
    tail = v.integer(q, "tail", 100, 0, ctx.limits.max_log_lines)
    follow = v.boolean(q, "follow", False)
    since = v.timestamp(q, "since")
    accept_sse = "text/event-stream" in request.headers.get("Accept", "")
    fmt = v.choice(q, "format", "sse" if accept_sse else "text", ("text", "sse"))
    c = await find(ctx, request.match_info["name"])
    tracker = request.app[STREAMS_KEY]
    with tracker.hold():
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8"
                if fmt == "sse"
                else "text/plain; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        resp.enable_chunked_encoding()
        lines = ctx.get_engine().logs(c.id, tail=tail, since=since, follow=follow).__aiter__()
        await resp.prepare(request)
        await _pump(
            request,
            resp,
            lines,
            sse=fmt == "sse",
            keepalive=ctx.limits.keepalive_seconds,
            max_seconds=ctx.limits.max_follow_seconds if follow else 300.0,
            tracker=tracker,
        )
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
    log.debug("log stream ended", extra={"device": ctx.device_id, "container": c.name})
    return resp
