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
from agent.store.base import meta_float, set_meta
from protocol.reported import MetricsPayload, RowKind

# Seconds one upstream metrics row covers: 60 (every minute, full detail) unless a metered
# link's pacing (agent.sync.pacing) asks for less detail. Set by the sync service.
SPAN_KEY = "upstream_span"
UPSTREAM_KEY = "rollup_up_through"


def fold(c: sqlite3.Connection, now: float) -> int:
    """Fold finished minutes into ``metrics_1m`` and finished hours into ``metrics_1h``, and
    queue their ``metrics.1m`` outbox rows: one per minute, or, on a metered link, one per
    finished ``upstream_span`` (the raw detail a budget gives up first; the store keeps every
    minute). Returns the number of 1-minute buckets written.

    Watermarks in ``meta`` make this safe to call any time, any number of times: a bucket
    is folded once, and a bucket that already exists is merged, never overwritten; each
    minute goes upstream once, whatever the span was or becomes.
    """
    span = int(meta_float(c, SPAN_KEY) or ru.MINUTE)
    written = _fold_minutes(c, ru.bucket_start(now, ru.MINUTE), now, queue=span <= ru.MINUTE)
    if span > ru.MINUTE:
        _queue_spans(c, span, now)
    _fold_hours(c, ru.bucket_start(now, ru.HOUR))
    return written


def roll_up(store: Store, now: float | None = None) -> int:
    """``fold`` in its own transaction on ``store``, at ``now`` (default: the clock)."""
    return store.write_now(fold, time.time() if now is None else now)


def _fold_minutes(c: sqlite3.Connection, cutoff: int, now: float, *, queue: bool = True) -> int:
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
    if queue:
        up = meta_float(c, UPSTREAM_KEY)
        if up is not None and up < wm:
            # Back to full detail after a metered span: the minutes folded meanwhile but not
            # yet sent go first, each on its own.
            for b, m, mn, av, mx, n in tables.buckets_between(c, "metrics_1m", up, wm):
                if (b, m) not in merged:
                    by_bucket.setdefault(b, {})[m] = [
                        ru.wire_number(mn), ru.wire_number(av), ru.wire_number(mx), n
                    ]  # fmt: skip
        for start, metrics in sorted(by_bucket.items()):
            if up is None or start >= up:
                outbox.append(c, RowKind.METRICS_1M, {"bucket": start, "metrics": metrics}, now)
        set_meta(c, UPSTREAM_KEY, cutoff)
    tables.set_folded_through(c, "metrics_1m", cutoff)
    return len(by_bucket)


def _queue_spans(c: sqlite3.Connection, span: int, now: float) -> None:
    """One ``metrics.1m`` row per finished ``span`` of stored minutes not yet sent, labelled
    by its first unsent minute (so it never collides with a minute the hub already has) and
    carrying ``span``; min and max stay exact, avg is weighted by sample count."""
    through = tables.folded_through(c, "metrics_1m")
    if through is None:
        return
    up = meta_float(c, UPSTREAM_KEY)
    lo = up if up is not None else tables.first_minute(c)
    if lo is None:
        return
    hi = ru.bucket_start(through, span)
    if hi <= lo:
        return
    groups: dict[int, dict[str, list[float]]] = {}
    firsts: dict[int, int] = {}
    found = tables.buckets_between(c, "metrics_1m", lo, hi)
    for b, _m, *_ in found:
        g = ru.bucket_start(b, span)
        firsts[g] = min(firsts.get(g, b), b)
    folded = ru.fold_buckets(
        ((b, m, ru.Agg.from_stored(mn, av, mx, n)) for b, m, mn, av, mx, n in found), span
    )
    for (g, metric), agg in sorted(folded.items()):
        groups.setdefault(g, {})[metric] = [
            ru.wire_number(agg.min),
            ru.wire_number(agg.avg),
            ru.wire_number(agg.max),
            agg.count,
        ]
    for g, metrics in sorted(groups.items()):
        payload: MetricsPayload = {"bucket": firsts[g], "metrics": metrics, "span": span}
        outbox.append(c, RowKind.METRICS_1M, payload, now)
    set_meta(c, UPSTREAM_KEY, hi)


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
