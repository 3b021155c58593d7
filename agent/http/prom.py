"""``GET /metrics``: Prometheus text from a private registry, refreshed on each scrape.

Reconcile runs and pull bytes are counted from the store (journal and events) past a
watermark, so the counters are exact and monotonic for this process without the reconciler
knowing Prometheus exists. Gauges (outbox, sync lag, container states) are read fresh.

prometheus_client (with the http.server and wsgiref it imports, about 1 MB of RSS) is
imported at the first scrape, not at start: a device nobody scrapes never loads it.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from agent.http import validate as v
from agent.http.auth import CTX_KEY
from agent.http.context import AppContext
from agent.http.logs import STREAMS_KEY
from agent.store import Store

JOURNAL_SCAN = 200
EVENT_SCAN = 1000
MAX_EVENT_PAGES = 20


class Exporter:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._counted_runs: set[int] = set()
        self._run_floor = 0
        self._event_wm: int | None = None
        self._ready = False

    def _metrics(self) -> None:
        """Create the registry and its metrics (first scrape)."""
        if self._ready:
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        ctx = self.ctx
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.info = Gauge(
            "signalbeam_agent_info", "Agent identity", ["device", "version"], registry=r
        )
        self.uptime = Gauge("signalbeam_agent_uptime_seconds", "Agent uptime", registry=r)
        self.runs = Counter(
            "signalbeam_reconcile_runs", "Finished reconcile runs", ["result"], registry=r
        )
        self.duration = Histogram(
            "signalbeam_reconcile_duration_seconds",
            "Reconcile run durations",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.outbox_rows = Gauge("signalbeam_outbox_pending_rows", "Unsent outbox rows", registry=r)
        self.outbox_bytes = Gauge(
            "signalbeam_outbox_pending_bytes", "Bytes of unsent outbox rows", registry=r
        )
        self.sync_lag = Gauge(
            "signalbeam_sync_lag_seconds",
            "Age of the oldest unsent outbox row (0 when everything is sent)",
            registry=r,
        )
        self.hub_online = Gauge(
            "signalbeam_hub_online", "1 when the hub link is up, 0 when down", registry=r
        )
        self.containers = Gauge(
            "signalbeam_containers",
            "Containers by state and health",
            ["state", "health"],
            registry=r,
        )
        self.pull_bytes = Counter(
            "signalbeam_image_pull_bytes", "Bytes of images pulled", registry=r
        )
        self.pulls = Counter(
            "signalbeam_image_pulls", "Image pulls by result", ["result"], registry=r
        )
        self.log_streams = Gauge(
            "signalbeam_http_log_streams", "Open log follow streams", registry=r
        )
        self.info.labels(ctx.device_id, ctx.version).set(1)
        self._ready = True

    async def _scan_journal(self) -> None:
        for run in await self.ctx.store.read(Store.journal, JOURNAL_SCAN):
            if run.id <= self._run_floor or run.id in self._counted_runs:
                continue
            if run.result is None or run.finished_at is None:
                continue
            self._counted_runs.add(run.id)
            self.runs.labels(run.result).inc()
            self.duration.observe(max(0.0, run.finished_at - run.started_at))
        if len(self._counted_runs) > 2 * JOURNAL_SCAN:
            # Runs older than the scan window can never be seen again: forget them.
            keep = sorted(self._counted_runs)[-JOURNAL_SCAN:]
            self._run_floor = keep[0] - 1
            self._counted_runs = set(keep)

    async def _scan_events(self) -> None:
        store = self.ctx.store
        if self._event_wm is None:
            self._event_wm = 0
        for _ in range(MAX_EVENT_PAGES):
            rows = await store.read(Store.events, self._event_wm, EVENT_SCAN)
            for e in rows:
                if e.kind == "pull.done":
                    size = (e.data or {}).get("bytes")
                    if isinstance(size, int) and size > 0:
                        self.pull_bytes.inc(size)
                    self.pulls.labels("done").inc()
                elif e.kind == "pull.failed":
                    self.pulls.labels("failed").inc()
            if rows:
                self._event_wm = rows[-1].seq
            if len(rows) < EVENT_SCAN:
                break

    async def refresh(self, streams: int) -> None:
        self._metrics()
        ctx = self.ctx
        self.uptime.set(ctx.uptime())
        await self._scan_journal()
        await self._scan_events()
        stats = await ctx.store.read(Store.outbox_stats)
        self.outbox_rows.set(stats["pending"])
        self.outbox_bytes.set(stats["bytes"])
        oldest = stats.get("oldest_created_at")
        self.sync_lag.set(0.0 if oldest is None else max(0.0, time.time() - oldest))
        hub = ctx.hub()
        self.hub_online.set(1.0 if hub.online else 0.0)
        self.log_streams.set(streams)
        try:
            observed: list[tuple[str, str]] = [
                (c.state, c.health) for c in await ctx.get_engine().list_containers()
            ]
        except Exception:
            # The engine is down: report the last snapshot rather than no containers at all.
            observed = [
                (str(c.get("state", "unknown")), str(c.get("health", "none")))
                for c in await ctx.store.read(Store.observed)
            ]
        counts: dict[tuple[str, str], int] = {}
        for key in observed:
            counts[key] = counts.get(key, 0) + 1
        self.containers.clear()
        for (state, health), n in counts.items():
            self.containers.labels(state, health).set(n)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        self._metrics()
        out: Any = generate_latest(self.registry)
        return bytes(out)


EXPORTER_KEY: web.AppKey[Exporter] = web.AppKey("exporter", Exporter)


async def get_prometheus(request: web.Request) -> web.Response:
    v.only(request.query, ())
    exporter = request.app[EXPORTER_KEY]
    await exporter.refresh(request.app[STREAMS_KEY].active)
    body = exporter.render()
    resp = web.Response(body=body)
    from prometheus_client import CONTENT_TYPE_LATEST

    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def make_exporter(ctx: AppContext) -> Exporter:
    return Exporter(ctx)


__all__ = ["CTX_KEY", "EXPORTER_KEY", "Exporter", "get_prometheus", "make_exporter"]
