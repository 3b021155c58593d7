"""Folding the store's raw samples into minute rollups (each minute with its ``metrics.1m``
outbox row) and minutes into hour rollups, in one store transaction.

The arithmetic is ``agent.metrics.rollup`` (pure); the SQL is ``agent.store.metrics``. This
module decides which buckets are finished and merges them with what is stored.
"""

from __future__ import annotations

import sqlite3
import time

from agent.metrics import rollup as ru
from agent.store import Store, outbox
from agent.store import metrics as tables
from protocol.reported import RowKind


def fold(c: sqlite3.Connection, now: float) -> int:
    """Fold finished minutes into ``metrics_1m`` (each with its outbox row) and finished
    hours into ``metrics_1h``. Returns the number of 1-minute buckets written.

    Watermarks in ``meta`` make this safe to call any time, any number of times: a bucket
    is folded once, and a bucket that already exists is merged, never overwritten.
    """
    written = _fold_minutes(c, ru.bucket_start(now, ru.MINUTE), now)
    _fold_hours(c, ru.bucket_start(now, ru.HOUR))
    return written


def roll_up(store: Store, now: float | None = None) -> int:
    """``fold`` in its own transaction on ``store``, at ``now`` (default: the clock)."""
    return store.write_now(fold, time.time() if now is None else now)


def _fold_minutes(c: sqlite3.Connection, cutoff: int, now: float) -> int:
    wm = tables.folded_through(c, "metrics_1m")
    if wm is None:
        first = tables.first_sample_ts(c)
        if first is None:
            return 0
        wm = ru.bucket_start(first, ru.MINUTE)
    if cutoff <= wm:
        return 0
    new = ru.fold_samples(tables.samples_between(c, wm, cutoff), ru.MINUTE)
    merged = _merge_stored(c, "metrics_1m", new)
    tables.write_buckets(c, "metrics_1m", _as_rows(merged))
    by_bucket: dict[int, dict[str, list[float]]] = {}
    for (start, metric), agg in sorted(merged.items()):
        by_bucket.setdefault(start, {})[metric] = [
            ru.wire_number(agg.min),
            ru.wire_number(agg.avg),
            ru.wire_number(agg.max),
            agg.count,
        ]
    for start, metrics in sorted(by_bucket.items()):
        outbox.append(c, RowKind.METRICS_1M, {"bucket": start, "metrics": metrics}, now)
    tables.set_folded_through(c, "metrics_1m", cutoff)
    return len(by_bucket)


def _fold_hours(c: sqlite3.Connection, cutoff: int) -> None:
    wm = tables.folded_through(c, "metrics_1h")
    if wm is None:
        first = tables.first_minute(c)
        if first is None:
            return
        wm = ru.bucket_start(first, ru.HOUR)
    if cutoff <= wm:
        return
    new = ru.fold_buckets(
        (
            (b, m, ru.Agg.from_stored(mn, av, mx, n))
            for b, m, mn, av, mx, n in tables.buckets_between(c, "metrics_1m", wm, cutoff)
        ),
        ru.HOUR,
    )
    tables.write_buckets(c, "metrics_1h", _as_rows(_merge_stored(c, "metrics_1h", new)))
    tables.set_folded_through(c, "metrics_1h", cutoff)


def _merge_stored(
    c: sqlite3.Connection, table: tables.Table, new: dict[tuple[int, str], ru.Agg]
) -> dict[tuple[int, str], ru.Agg]:
    if not new:
        return new
    lo = min(k[0] for k in new)
    hi = max(k[0] for k in new)
    existing = {
        (b, m): ru.Agg.from_stored(mn, av, mx, n)
        for b, m, mn, av, mx, n in tables.buckets_between(c, table, lo, hi, inclusive=True)
    }
    return ru.merge_into(existing, new)


def _as_rows(buckets: dict[tuple[int, str], ru.Agg]) -> list[tables.BucketRow]:
    return [(b, m, a.min, a.avg, a.max, a.count) for (b, m), a in buckets.items()]
