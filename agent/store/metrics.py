"""Metric tables: raw samples (never leave the device) and the minute and hour rollups.

Only the SQL lives here. Folding samples into rollups (what a bucket holds, when a minute
is finished, the ``metrics.1m`` outbox rows) is ``agent.metrics.folding``, which runs these
functions inside one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from agent.errors import StoreError
from agent.store.base import StoreBase, meta_float, rows, set_meta
from agent.store.rows import MetricPoint

Resolution = Literal["raw", "1m", "1h"]
Table = Literal["metrics_1m", "metrics_1h"]
# (bucket start, metric, min, avg, max, count): one stored rollup row.
BucketRow = tuple[int, str, float, float, float, int]

_WATERMARK = {"metrics_1m": "rollup_1m_through", "metrics_1h": "rollup_1h_through"}


def record(c: sqlite3.Connection, ts: float, values: Mapping[str, float]) -> int:
    """Store one round of raw samples; returns how many."""
    found = [(ts, k, float(v)) for k, v in values.items() if v is not None]
    if found:
        c.executemany("INSERT INTO metric_samples (ts, metric, value) VALUES (?, ?, ?)", found)
    return len(found)


def folded_through(c: sqlite3.Connection, table: Table) -> float | None:
    """Where folding into ``table`` has got to (everything before it is folded)."""
    return meta_float(c, _WATERMARK[table])


def set_folded_through(c: sqlite3.Connection, table: Table, cutoff: int) -> None:
    set_meta(c, _WATERMARK[table], cutoff)


def first_sample_ts(c: sqlite3.Connection) -> float | None:
    value = c.execute("SELECT min(ts) FROM metric_samples").fetchone()[0]
    return None if value is None else float(value)


def first_minute(c: sqlite3.Connection) -> int | None:
    value = c.execute("SELECT min(bucket) FROM metrics_1m").fetchone()[0]
    return None if value is None else int(value)


def samples_between(c: sqlite3.Connection, lo: float, hi: float) -> list[tuple[float, str, float]]:
    """Raw ``(ts, metric, value)`` samples with ``lo <= ts < hi``."""
    return c.execute(
        "SELECT ts, metric, value FROM metric_samples WHERE ts >= ? AND ts < ?", (lo, hi)
    ).fetchall()


def buckets_between(
    c: sqlite3.Connection, table: Table, lo: float, hi: float, *, inclusive: bool = False
) -> list[BucketRow]:
    """Stored rollup rows with ``lo <= bucket < hi`` (``<= hi`` when ``inclusive``)."""
    op = "<=" if inclusive else "<"
    return c.execute(
        f"SELECT bucket, metric, min, avg, max, count FROM {table} "
        f"WHERE bucket >= ? AND bucket {op} ?",
        (lo, hi),
    ).fetchall()


def write_buckets(c: sqlite3.Connection, table: Table, found: Iterable[BucketRow]) -> None:
    """Insert or replace rollup rows (the caller has merged them with what was stored)."""
    c.executemany(
        f"INSERT OR REPLACE INTO {table} (bucket, metric, min, avg, max, count) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        list(found),
    )


def points(
    c: sqlite3.Connection,
    resolution: Resolution = "1m",
    since: float | None = None,
    until: float | None = None,
    metric: str | None = None,
    limit: int = 100_000,
) -> list[MetricPoint]:
    """Points in ``[since, until)``, oldest first."""
    lo = -1e18 if since is None else float(since)
    hi = 1e18 if until is None else float(until)
    params: tuple[Any, ...]
    if resolution == "raw":
        sql = "SELECT ts, metric, value FROM metric_samples WHERE ts >= ? AND ts < ?"
        params = (lo, hi)
        if metric is not None:
            sql += " AND metric = ?"
            params += (metric,)
        found = rows(c, sql + " ORDER BY ts, metric LIMIT ?", (*params, int(limit)))
        return [
            MetricPoint(r["ts"], r["metric"], r["value"], r["value"], r["value"], 1) for r in found
        ]
    if resolution not in ("1m", "1h"):
        raise StoreError(f"resolution must be raw, 1m or 1h, got {resolution!r}")
    table = "metrics_1m" if resolution == "1m" else "metrics_1h"
    sql = f"SELECT * FROM {table} WHERE bucket >= ? AND bucket < ?"
    params = (lo, hi)
    if metric is not None:
        sql += " AND metric = ?"
        params += (metric,)
    found = rows(c, sql + " ORDER BY bucket, metric LIMIT ?", (*params, int(limit)))
    return [
        MetricPoint(r["bucket"], r["metric"], r["min"], r["avg"], r["max"], r["count"])
        for r in found
    ]


def next_point(
    c: sqlite3.Connection, resolution: Resolution, at_or_after: float, metric: str | None = None
) -> float | None:
    """The time of the first point at or after ``at_or_after`` (None: there is none).

    One indexed lookup (``ts`` / the ``(bucket, metric)`` key), so a reader walking a
    window in chunks can jump over empty stretches instead of asking for each of them.
    """
    if resolution == "raw":
        table, col = "metric_samples", "ts"
    elif resolution in ("1m", "1h"):
        table, col = ("metrics_1m" if resolution == "1m" else "metrics_1h"), "bucket"
    else:
        raise StoreError(f"resolution must be raw, 1m or 1h, got {resolution!r}")
    sql = f"SELECT min({col}) AS t FROM {table} WHERE {col} >= ?"
    params: tuple[Any, ...] = (float(at_or_after),)
    if metric is not None:
        sql += " AND metric = ?"
        params += (metric,)
    t = rows(c, sql, params)[0]["t"]
    return None if t is None else float(t)


def latest_samples(c: sqlite3.Connection) -> dict[str, float]:
    found = rows(
        c,
        "SELECT metric, value FROM metric_samples WHERE ts = (SELECT max(ts) FROM metric_samples)",
    )
    return {r["metric"]: r["value"] for r in found}


class MetricsStore(StoreBase):
    def record_samples(self, ts: float, values: Mapping[str, float]) -> int:
        """Store one round of raw samples (they never leave the device)."""
        if not any(v is not None for v in values.values()):
            return 0
        return self.write_now(record, ts, values)

    def metrics(
        self,
        resolution: Resolution = "1m",
        since: float | None = None,
        until: float | None = None,
        metric: str | None = None,
        limit: int = 100_000,
    ) -> list[MetricPoint]:
        """Points in ``[since, until)``, oldest first."""
        return self.read_now(points, resolution, since, until, metric, limit)

    def metrics_next(
        self, resolution: Resolution, at_or_after: float, metric: str | None = None
    ) -> float | None:
        """The time of the first point at or after ``at_or_after`` (None: there is none)."""
        return self.read_now(next_point, resolution, at_or_after, metric)

    def set_upstream_span(self, seconds: int) -> None:
        """Seconds each upstream metrics row covers (agent.metrics.folding; a metered link's
        pacing gives up detail this way first)."""
        self.write_now(set_meta, "upstream_span", int(seconds))

    def latest_samples(self) -> dict[str, float]:
        return self.read_now(latest_samples)
