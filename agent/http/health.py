"""Unauthenticated liveness and readiness probes (for systemd, a load balancer, a tech)."""

from __future__ import annotations

from aiohttp import web

from agent.http import validate as v
from agent.http.auth import CTX_KEY
from agent.http.errors import ApiError, json_response
from agent.store import Store
from protocol import errors as perr
from sbutil.tasks import wait_for

# Generous: a busy Podman on a small device can take seconds, and a readiness flap is worse
# than a slow answer. The probe is the call the API depends on most (listing containers),
# not /info, which Podman computes slowly (storage usage).
ENGINE_PROBE_TIMEOUT = 5.0


def _store_check(store: Store) -> str | None:
    store.last_event_seq()  # readable...
    # ...is not enough: a full disk fails every write the agent makes.
    return store.disk_full()


async def get_live(request: web.Request) -> web.Response:
    v.only(request.query, ())
    return json_response({"status": "ok"})


async def get_ready(request: web.Request) -> web.Response:
    v.only(request.query, ())
    ctx = request.app[CTX_KEY]
    checks: dict[str, str] = {}
    try:
        full = await ctx.store.read(_store_check)
        checks["store"] = full or "ok"
    except Exception as exc:
        checks["store"] = f"failed: {exc}"
    try:
        engine = ctx.current_engine()
        if engine is None:
            raise RuntimeError("not connected")
        await wait_for(engine.list_containers(), ENGINE_PROBE_TIMEOUT)
        checks["engine"] = "ok"
    except TimeoutError:
        checks["engine"] = f"no answer within {ENGINE_PROBE_TIMEOUT:g}s"
    except Exception as exc:
        checks["engine"] = f"failed: {exc}"
    if any(value != "ok" for value in checks.values()):
        raise ApiError(perr.UNAVAILABLE, "not ready", details=checks)
    return json_response({"status": "ready", "checks": checks})
