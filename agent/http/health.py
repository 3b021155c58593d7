"""Unauthenticated liveness and readiness probes (for systemd, a load balancer, a tech)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from agent.http import validate as v
from agent.http.auth import CTX_KEY
from agent.http.errors import ApiError, json_response
from protocol import errors as perr

ENGINE_PROBE_TIMEOUT = 2.0


async def get_live(request: web.Request) -> web.Response:
    v.only(request.query, ())
    return json_response({"status": "ok"})


async def get_ready(request: web.Request) -> web.Response:
    v.only(request.query, ())
    ctx = request.app[CTX_KEY]
    checks: dict[str, str] = {}
    try:
        ctx.store.last_event_seq()
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"failed: {exc}"
    try:
        engine = ctx.current_engine()
        if engine is None:
            raise RuntimeError("not connected")
        await asyncio.wait_for(engine.info(), ENGINE_PROBE_TIMEOUT)
        checks["engine"] = "ok"
    except TimeoutError:
        checks["engine"] = f"no answer within {ENGINE_PROBE_TIMEOUT:g}s"
    except Exception as exc:
        checks["engine"] = f"failed: {exc}"
    if any(value != "ok" for value in checks.values()):
        raise ApiError(perr.UNAVAILABLE, "not ready", details=checks)
    return json_response({"status": "ready", "checks": checks})
