"""The hub's small HTTP side: liveness, readiness and Prometheus metrics (aiohttp)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from hub.metrics import HubMetrics
from protocol.errors import UNAVAILABLE, error_body

# Returns the reasons the hub is not ready; empty means ready.
ReadinessCheck = Callable[[], Awaitable[list[str]]]
BeforeScrape = Callable[[], Awaitable[None]]


def make_app(
    metrics: HubMetrics, readiness: ReadinessCheck, before_scrape: BeforeScrape
) -> web.Application:
    async def live(_: web.Request) -> web.Response:
        return web.json_response({"status": "live"})

    async def ready(_: web.Request) -> web.Response:
        problems = await readiness()
        if problems:
            body = error_body(UNAVAILABLE, "not ready: " + "; ".join(problems), details=problems)
            return web.Response(status=503, text=json.dumps(body), content_type="application/json")
        return web.json_response({"status": "ready"})

    async def prometheus(_: web.Request) -> web.Response:
        await before_scrape()
        return web.Response(
            body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    app = web.Application()
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", prometheus)
    return app
