"""Writes through the API are refused, plainly, while the agent's disk is full.

When ``/health/ready`` says "store: disk full", every write answers 507 Insufficient Storage
with the reason, before it touches the store: one predictable rule for a technician, and
the little space left stays for the agent's own records (events, journal, deployments),
which the hub and a later diagnosis need more than an API write. A write that passes the
check and still finds no room gets the same 507 from the error middleware.
"""

from __future__ import annotations

from aiohttp import web

from agent.http.auth import CTX_KEY
from agent.http.errors import ApiError, Handler
from agent.store import Store
from protocol import errors as perr

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Revoking a leaked token must never wait for space: it is always tried (it rewrites one
# row of the small token file), and answered 507 only if its own write fails.
ALWAYS_TRIED = frozenset({("DELETE", "/v1/tokens/{id}")})


@web.middleware
async def disk_guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in WRITE_METHODS:
        route = request.match_info.route
        path = route.resource.canonical if route.resource is not None else request.path
        if (request.method, path) not in ALWAYS_TRIED:
            reason = await request.app[CTX_KEY].store.read(Store.disk_full)
            if reason is not None:
                raise ApiError(perr.INSUFFICIENT_STORAGE, reason)
    return await handler(request)
