"""The aiohttp application: routes, the role each needs, middlewares, shared state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from agent.http import (
    actions,
    health,
    locks_api,
    logs,
    metrics_api,
    openapi,
    page,
    prom,
    tokens_api,
    views,
)
from agent.http.auth import CTX_KEY, ROLES_KEY, auth_middleware
from agent.http.containers import StatsCache
from agent.http.context import AppContext
from agent.http.diskguard import disk_guard_middleware
from agent.http.errors import DEVICE_KEY, error_middleware
from agent.http.tokens import Role

Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]], Role | None]

# (method, path, handler, least role; None = public). The OpenAPI document must list
# exactly these; tests/unit/test_http_openapi.py holds the two together.
ROUTES: list[Route] = [
    ("GET", "/", page.get_page, "viewer"),
    ("GET", "/health/live", health.get_live, None),
    ("GET", "/health/ready", health.get_ready, None),
    ("GET", "/openapi.json", openapi.get_openapi, None),
    ("GET", "/metrics", prom.get_prometheus, "viewer"),
    ("GET", "/v1/status", views.get_status, "viewer"),
    ("GET", "/v1/containers", views.get_containers, "viewer"),
    ("GET", "/v1/containers/{name}", views.get_container, "viewer"),
    ("GET", "/v1/containers/{name}/logs", logs.get_logs, "viewer"),
    ("POST", "/v1/containers/{name}/restart", actions.post_restart, "operator"),
    ("GET", "/v1/metrics", metrics_api.get_metrics, "viewer"),
    ("GET", "/v1/events", views.get_events, "viewer"),
    ("GET", "/v1/desired", views.get_desired, "viewer"),
    ("GET", "/v1/journal", views.get_journal, "viewer"),
    ("POST", "/v1/reconcile", actions.post_reconcile, "operator"),
    ("POST", "/v1/local/desired", actions.post_local_desired, "operator"),
    ("DELETE", "/v1/local/desired", actions.delete_local_desired, "operator"),
    ("GET", "/v1/update-lock", locks_api.get_update_lock, "viewer"),
    ("POST", "/v1/update-lock", locks_api.post_update_lock, "operator"),
    ("DELETE", "/v1/update-lock", locks_api.delete_update_lock, "operator"),
    ("GET", "/v1/tokens", tokens_api.get_tokens, "admin"),
    ("POST", "/v1/tokens", tokens_api.post_token, "admin"),
    ("DELETE", "/v1/tokens/{id}", tokens_api.delete_token, "admin"),
]


def build_app(ctx: AppContext) -> web.Application:
    # Order matters: errors outermost, so auth refusals get the same shape as the rest;
    # the disk guard after auth, so only a caller allowed to write learns the disk is full.
    app = web.Application(
        middlewares=[error_middleware, auth_middleware, disk_guard_middleware],
        client_max_size=ctx.limits.client_max_size,
    )
    app[CTX_KEY] = ctx
    app[DEVICE_KEY] = ctx.device_id
    roles: dict[tuple[str, str], Role | None] = {}
    app[views.STATS_KEY] = StatsCache()
    app[actions.RESTARTING_KEY] = set()
    app[metrics_api.METRICS_CACHE_KEY] = metrics_api.MetricsCache()
    app[logs.STREAMS_KEY] = logs.StreamTracker(ctx.limits.max_log_streams)
    app[prom.EXPORTER_KEY] = prom.Exporter(ctx)
    for method, path, handler, role in ROUTES:
        app.router.add_route(method, path, handler)
        roles[(method, path)] = role
    app[ROLES_KEY] = roles
    ctx.extra["app"] = app  # lets tests and the daemon reach per-app state (streams, ...)
    return app
