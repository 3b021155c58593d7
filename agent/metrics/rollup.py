"""Pure rollup arithmetic: raw samples -> 1-minute buckets -> 1-hour buckets.

An ``Agg`` keeps min, max, sum and count, so buckets merge exactly whatever the order or
split of the samples (a restart that rolls up half a minute, then the rest, gives the same
numbers as one pass). The average is derived, never stored as the thing merged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

MINUTE = 60
HOUR = 3600


@dataclass(frozen=True)
class Agg:
    min: float
    max: float
    sum: float
    count: int

    @property
    def avg(self) -> float:
        return self.sum / self.count

    @classmethod
    def of(cls, value: float) -> Agg:
        return cls(value, value, value, 1)

    @classmethod
    def from_stored(cls, mn: float, avg: float, mx: float, count: int) -> Agg:
        """Rebuild from a stored (min, avg, max, count) row."""
        return cls(mn, mx, avg * count, count)

    def merge(self, other: Agg) -> Agg:
        return Agg(
            min(self.min, other.min),
            max(self.max, other.max),
            self.sum + other.sum,
            self.count + other.count,
        )


def wire_number(value: float, digits: int = 4) -> float | int:
    """``value`` to ``digits`` significant figures, as an int when whole.

    Upstream rollups travel at 0.1 % precision: ``0.43603515625`` becomes ``0.436`` and
    the minute row shrinks by about a third, which matters for the bytes a device sends per
    day. The device's own tables keep full precision.
    """
    if not math.isfinite(value):
        return value
    rounded = float(f"{value:.{digits}g}")
    if rounded.is_integer() and abs(rounded) < 2**53:
        return int(rounded)
    return rounded


def bucket_start(ts: float, width: int) -> int:
    """Start (epoch seconds) of the ``width``-second bucket holding ``ts``."""
    return int(math.floor(ts / width) * width)


def merge_all(aggs: Iterable[Agg]) -> Agg | None:
    out: Agg | None = None
    for a in aggs:
        out = a if out is None else out.merge(a)
    return out


def fold_samples(
    samples: Iterable[tuple[float, str, float]], width: int = MINUTE
) -> dict[tuple[int, str], Agg]:
    """Group raw ``(ts, metric, value)`` samples into ``width``-second buckets per metric.

    Non-finite values are skipped: one NaN from a flaky sensor must not poison a whole bucket.
    """
    out: dict[tuple[int, str], Agg] = {}
    for ts, metric, value in samples:
        if not math.isfinite(value):
            continue
        key = (bucket_start(ts, width), metric)
        agg = Agg.of(float(value))
        prev = out.get(key)
        out[key] = agg if prev is None else prev.merge(agg)
    return out


def fold_buckets(
    buckets: Iterable[tuple[int, str, Agg]], width: int = HOUR
) -> dict[tuple[int, str], Agg]:
    """Fold finer buckets ``(start, metric, agg)`` into coarser ``width``-second buckets."""
    out: dict[tuple[int, str], Agg] = {}
    for start, metric, agg in buckets:
        key = (bucket_start(start, width), metric)
        prev = out.get(key)
        out[key] = agg if prev is None else prev.merge(agg)
    return out


def merge_into(
    existing: dict[tuple[int, str], Agg], new: dict[tuple[int, str], Agg]
) -> dict[tuple[int, str], Agg]:
    """The buckets of ``new``, each merged with the same bucket in ``existing`` if present."""
    return {k: (existing[k].merge(v) if k in existing else v) for k, v in new.items()}
