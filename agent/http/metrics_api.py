"""``GET /v1/metrics``: local samples and rollups, as one column set per metric.

Columns (``ts``, ``min``, ``avg``, ``max``, ``count`` arrays) instead of one object per point:
24 h of 1-minute rollups for a dozen metrics is ~17k points, and the columnar JSON is about
a third the size and far cheaper to build. Rollup answers (1m, 1h) are cached for
``CACHE_SECONDS`` and built once for any number of identical concurrent requests: a bucket
only changes when the rollup task writes, so a phone refreshing a chart, or fifty of them,
costs one query. A relative ``since`` is normalised to its bucket boundary, so "-24h" asked
twice in one minute is the same answer.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web

from agent.http import validate as v
from agent.http.auth import CTX_KEY
from agent.store import MetricPoint, Store
from agent.store.metrics import Resolution

MAX_POINTS = 100_000
DEFAULT_LIMIT = 20_000
CACHE_SECONDS = 5.0
CACHE_BYTES = 4 * 1024 * 1024  # an agent aims at ~40 MB RSS: the cache gets a tenth of that
WIDTH = {"1m": 60, "1h": 3600}
# ~360 rows per metric per query (raw samples come every 10 s by default).
CHUNK_SECONDS = {"raw": 3600.0, "1m": 6 * 3600.0, "1h": 15 * 86400.0}
DEFAULT_WINDOW = {"raw": 3600, "1m": 86400, "1h": 30 * 86400}

Key = tuple[str, float, float | None, str | None, int]


def add_columns(
    series: dict[str, dict[str, list[float]]], points: list[MetricPoint], room: int
) -> int:
    """Append up to ``room`` points to ``series``; returns how many were taken."""
    for p in points[:room]:
        s = series.get(p.metric)
        if s is None:
            s = series[p.metric] = {"ts": [], "min": [], "avg": [], "max": [], "count": []}
        s["ts"].append(p.ts)
        s["min"].append(p.min)
        s["avg"].append(p.avg)
        s["max"].append(p.max)
        s["count"].append(p.count)
    return min(len(points), room)


def build(store: Store, key: Key, now: float | None = None) -> bytes:
    """Query in time chunks, so the row objects alive at once stay few (peak RSS), and
    fold each chunk into columns before asking for the next.

    Each chunk starts at a point that exists (``Store.metrics_next``), so empty stretches
    cost one indexed lookup, not one query per chunk: the work follows the data kept (which
    retention bounds), never the width of the window asked for. A window of centuries on a
    near-empty store is two lookups.
    """
    resolution, since, until, metric, limit = key
    res = cast(Resolution, resolution)
    chunk = CHUNK_SECONDS[resolution]
    end = until if until is not None else (time.time() if now is None else now) + chunk
    series: dict[str, dict[str, list[float]]] = {}
    taken = 0
    truncated = False
    lo = store.metrics_next(res, since, metric) if since < end else None
    while lo is not None and lo < end and not truncated:
        hi = min(lo + chunk, end)
        room = limit - taken
        points = store.metrics(res, lo, hi, metric, room + 1)
        taken += add_columns(series, points, room)
        truncated = len(points) > room
        lo = store.metrics_next(res, hi, metric) if hi < end else None
    body = {
        "resolution": resolution,
        "since": since,
        "until": until,
        "points": taken,
        "truncated": truncated,
        "series": series,
    }
    return json.dumps(body, separators=(",", ":")).encode()


class MetricsCache:
    """Short-lived answers plus single flight: one build per key, however many ask."""

    def __init__(self, ttl: float = CACHE_SECONDS, max_bytes: int = CACHE_BYTES) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.bytes = 0
        self._done: OrderedDict[Key, tuple[float, bytes]] = OrderedDict()
        self._running: dict[Key, asyncio.Future[bytes]] = {}
        self.builds = 0

    async def get(self, key: Key, make: Callable[[], Awaitable[bytes]]) -> bytes:
        hit = self._done.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        # Nobody else may be waiting when it fails: retrieve the exception so it is not
        # reported as lost (the first caller gets it raised anyway).
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._running[key] = fut
        try:
            self.builds += 1
            body = await make()
        except BaseException as exc:
            fut.set_exception(exc)
            raise
        finally:
            self._running.pop(key, None)
        fut.set_result(body)
        old = self._done.pop(key, None)
        if old is not None:
            self.bytes -= len(old[1])
        if len(body) <= self.max_bytes:
            self._done[key] = (time.monotonic(), body)
            self.bytes += len(body)
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._done.popitem(last=False)
            self.bytes -= len(dropped)
        return body


METRICS_CACHE_KEY: web.AppKey[MetricsCache] = web.AppKey("metrics_cache", MetricsCache)


def _ceil_to(ts: float, width: int) -> float:
    return float(math.ceil(ts / width) * width)


async def get_metrics(request: web.Request) -> web.Response:
    q = request.query
    v.only(q, ("resolution", "since", "until", "metric", "limit"))
    now = time.time()
    resolution = v.choice(q, "resolution", "1m", ("raw", "1m", "1h"))
    since = v.timestamp(q, "since", now)
    until = v.timestamp(q, "until", now)
    if since is None:
        since = now - DEFAULT_WINDOW[resolution]
    # An until before since is an empty window, not an error: it selects no points.
    metric = q.get("metric")
    if metric is not None and not v.METRIC_RE.fullmatch(metric):
        raise v.invalid("metric", "must be a metric name (letters, digits, _ . : -; max 128)")
    limit = v.integer(q, "limit", DEFAULT_LIMIT, 1, MAX_POINTS)
    store = request.app[CTX_KEY].store
    if resolution == "raw":
        key: Key = (resolution, since, until, metric, limit)
        body = await store.read(build, key)
    else:
        # Buckets start on multiples of the width, so "bucket >= since" selects the same
        # buckets as "bucket >= since rounded up": the rounded form is the cache key.
        width = WIDTH[resolution]
        key = (
            resolution,
            _ceil_to(since, width),
            None if until is None else _ceil_to(until, width),
            metric,
            limit,
        )
        body = await request.app[METRICS_CACHE_KEY].get(key, lambda: store.read(build, key))
    return web.Response(body=body, content_type="application/json")
