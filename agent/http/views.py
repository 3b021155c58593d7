"""Read-only endpoints (viewer role): status, containers, events, desired, journal, metrics."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from agent.http import validate as v
from agent.http.auth import CTX_KEY
from agent.http.containers import StatsCache, describe, describe_all, find, judged_health
from agent.http.context import AppContext
from agent.http.errors import json_response
from agent.reconcile.ports import Deployment
from agent.store import Store
from agent.sync.liveness import unreachable_since

STATS_KEY: web.AppKey[StatsCache] = web.AppKey("stats_cache", StatsCache)
MAX_EVENTS = 1000
MAX_JOURNAL = 200


def _ctx(request: web.Request) -> AppContext:
    return request.app[CTX_KEY]


def stuck_reason(summary: dict[str, Any], loop_result: Any = None) -> str | None:
    """Why the device is not converging, in words, or None when it is fine."""
    dep = summary.get("deployment") or {}
    last = summary.get("last_reconcile") or {}
    if dep.get("status") in ("failed", "rolled_back"):
        # Not retried until a new generation arrives: say which one and why.
        return f"generation {dep.get('generation')} {dep.get('status')}: {dep.get('reason')}"
    outcome = getattr(loop_result, "outcome", None)
    if outcome in ("failed", "held"):
        return f"reconcile {outcome}: {getattr(loop_result, 'reason', None)}"
    if outcome == "deferred":  # on purpose: an update lock, or outside the windows
        return str(getattr(loop_result, "reason", None) or "update deferred")
    if last.get("result") == "failed":
        return f"last reconcile failed: {last.get('reason')}"
    return None


def _status_reads(store: Store) -> tuple[dict[str, Any], Deployment | None]:
    return store.status_summary(), store.last_healthy_deployment()


async def status_doc(ctx: AppContext) -> dict[str, Any]:
    # One job on the store's thread: the summary and the healthy deployment agree.
    summary, healthy = await ctx.store.read(_status_reads)
    engine = ctx.current_engine()
    loop_result = getattr(ctx.current_reconcile(), "last_result", None)
    hub = ctx.hub()
    dep = summary.get("deployment")
    # What runs is the newest deployment that became healthy: while a new one is still
    # applying, or after it failed and was rolled back, that is the previous one.
    running = None if healthy is None else healthy.bundle_ref
    return {
        "device_id": ctx.device_id,
        "agent_version": ctx.version,
        "uptime_seconds": round(ctx.uptime(), 3),
        "started_at": ctx.started_wall,
        "now": time.time(),
        # Enrolled (leaf mode) counts as configured as much as a [hub] url does. online and
        # last_contact are end to end: the hub's own last answer (docs/sync.md).
        "hub": {
            "configured": hub.online is not None,
            "online": hub.online,
            "last_contact": hub.last_contact,
            "unreachable_since": unreachable_since(hub.online, hub.last_contact, hub.started_at),
        },
        "engine": None if engine is None else {"kind": engine.kind, "url": engine.url},
        "reconcile_loop": None if loop_result is None else loop_result.to_dict(),
        "running_bundle": running,
        "desired": summary.get("desired"),
        "deployment": dep,
        "last_reconcile": summary.get("last_reconcile"),
        "stuck": stuck_reason(summary, loop_result),
        "containers": summary.get("containers", []),
        "outbox": summary.get("outbox"),
        "disk": summary.get("disk"),
        "last_event_seq": summary.get("last_event_seq"),
        "tls_fingerprint": ctx.tls_fingerprint,
    }


async def get_status(request: web.Request) -> web.Response:
    v.only(request.query, ())
    return json_response(await status_doc(_ctx(request)))


async def get_containers(request: web.Request) -> web.Response:
    v.only(request.query, ())
    ctx = _ctx(request)
    containers = sorted(await ctx.get_engine().list_containers(), key=lambda c: (c.service, c.name))
    items = await describe_all(ctx, request.app[STATS_KEY], containers)
    return json_response({"containers": items})


async def get_container(request: web.Request) -> web.Response:
    v.only(request.query, ())
    ctx = _ctx(request)
    c = await find(ctx, request.match_info["name"])
    stats = await request.app[STATS_KEY].get(ctx, c)
    return json_response(describe(c, stats, await judged_health(ctx)))


async def get_events(request: web.Request) -> web.Response:
    v.only(request.query, ("after_seq", "limit"))
    after = v.optional_int(request.query, "after_seq", 0, 2**62)
    limit = v.integer(request.query, "limit", 100, 1, MAX_EVENTS)
    rows = await _ctx(request).store.read(Store.events, after, limit)
    events = [r.to_dict() for r in rows]
    # Paging: pass next_after_seq back as after_seq to continue where this page ended.
    next_after = events[-1]["seq"] if events else after
    return json_response({"events": events, "next_after_seq": next_after})


async def get_desired(request: web.Request) -> web.Response:
    v.only(request.query, ())
    d, revs = await _ctx(request).store.read(
        lambda s: (s.current_desired(), s.desired_revisions(limit=20))
    )
    current = None
    if d is not None:
        current = {
            "generation": d.generation,
            "source": d.source,
            "spec": d.spec,
            "rollout_id": d.rollout_id,
            "content_hash": d.content_hash,
        }
    revisions = [r.to_dict() for r in revs]
    return json_response({"desired": current, "revisions": revisions})


async def get_journal(request: web.Request) -> web.Response:
    v.only(request.query, ("limit",))
    limit = v.integer(request.query, "limit", 20, 1, MAX_JOURNAL)
    runs = await _ctx(request).store.read(Store.journal, limit)
    return json_response({"runs": [r.to_dict() for r in runs]})
