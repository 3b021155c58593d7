"""Mutating endpoints (operator role): reconcile now, restart a container, local override.

Each one is written to the device event log with the caller's token name, so the hub sees
who did what on the device even when the action happened offline.
"""

from __future__ import annotations

from aiohttp import web

from agent.errors import EngineError
from agent.http import validate as v
from agent.http.audit import audit
from agent.http.auth import CTX_KEY, caller
from agent.http.containers import describe, find
from agent.http.context import AppContext
from agent.http.errors import ApiError, json_response
from agent.runtime.restart import restart_container
from agent.store import Store
from bundles import BundleInvalid, content_hash, parse_bundle
from bundles.errors import BundleError
from protocol import errors as perr

# Container ids with a restart running: a second one would race the first's stop/start.
RESTARTING_KEY: web.AppKey[set[str]] = web.AppKey("restarting", set)

BUNDLE_TYPES = (
    "application/json",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/plain",
)


def _trigger(ctx: AppContext, reason: str) -> bool:
    loop = ctx.current_reconcile()
    if loop is None:
        return False
    loop.trigger(reason)
    return True


async def post_reconcile(request: web.Request) -> web.Response:
    v.only(request.query, ())
    ctx = request.app[CTX_KEY]
    who = caller(request)
    if ctx.current_reconcile() is None:
        raise ApiError(perr.UNAVAILABLE, "the reconcile loop is not running")
    seq = await audit(ctx, who, "local.reconcile", "reconcile requested over the local API")
    _trigger(ctx, f"http:{who.token.name}")
    return json_response({"triggered": True, "event_seq": seq}, status=202)


async def post_restart(request: web.Request) -> web.Response:
    v.only(request.query, ("timeout",))
    ctx = request.app[CTX_KEY]
    who = caller(request)
    timeout = v.integer(request.query, "timeout", 10, 0, 120)
    c = await find(ctx, request.match_info["name"])
    data = {"container": c.name, "service": c.service, "container_id": c.id}
    busy = request.app[RESTARTING_KEY]
    if c.id in busy:
        raise ApiError(perr.CONFLICT, f"a restart of {c.name} is already in progress", "name")
    busy.add(c.id)
    try:
        await restart_container(ctx.get_engine(), c, float(timeout))
    except Exception as exc:
        await audit(
            ctx,
            who,
            "local.restart",
            f"restart of {c.name} failed: {exc}",
            data,
            severity="error",
        )
        if isinstance(exc, EngineError | ApiError):
            raise
        # The engine client can leak its own errors (e.g. "already being stopped" while an
        # earlier restart still waits): that is the engine's answer, not a bug of ours.
        raise ApiError(perr.UNAVAILABLE, f"restart of {c.name} failed: {exc}") from exc
    finally:
        busy.discard(c.id)
    seq = await audit(ctx, who, "local.restart", f"restarted container {c.name}", data)
    after = await ctx.get_engine().inspect(c.id)
    body = describe(after or c, None)
    body["event_seq"] = seq
    return json_response(body)


async def post_local_desired(request: web.Request) -> web.Response:
    v.only(request.query, ())
    ctx = request.app[CTX_KEY]
    who = caller(request)
    if request.content_type not in BUNDLE_TYPES:
        raise ApiError(
            perr.BAD_REQUEST,
            f"body must be a bundle document ({', '.join(BUNDLE_TYPES)}), "
            f"got {request.content_type}",
            "body",
        )
    raw = await request.read()
    if not raw.strip():
        raise ApiError(perr.INVALID, "body: a bundle document is required", "body")
    try:
        spec = parse_bundle(raw, source="request body")
    except BundleInvalid as exc:
        first = exc.errors[0] if exc.errors else None
        raise ApiError(
            perr.INVALID,
            str(first) if first else "invalid bundle",
            first.path if first else "body",
            details=[e.to_dict() for e in exc.errors],
        ) from None
    except BundleError as exc:
        raise ApiError(perr.INVALID, str(exc), "body") from None
    desired = await ctx.store.write(
        Store.put_local_desired, spec.to_dict(), content_hash=content_hash(spec), actor=who.actor
    )
    triggered = _trigger(ctx, f"http:{who.token.name}:local-desired")
    return json_response(
        {
            "generation": desired.generation,
            "source": desired.source,
            "bundle_ref": spec.ref,
            "content_hash": desired.content_hash,
            "reconcile_triggered": triggered,
        },
        status=201,
    )


async def delete_local_desired(request: web.Request) -> web.Response:
    v.only(request.query, ())
    ctx = request.app[CTX_KEY]
    who = caller(request)
    cleared = await ctx.store.write(Store.clear_local_desired, actor=who.actor)
    if not cleared:
        raise ApiError(perr.NOT_FOUND, "there is no local override to clear")
    triggered = _trigger(ctx, f"http:{who.token.name}:local-cleared")
    current = await ctx.store.read(Store.current_desired)
    return json_response(
        {
            "cleared": True,
            "desired_generation": None if current is None else current.generation,
            "reconcile_triggered": triggered,
        }
    )
