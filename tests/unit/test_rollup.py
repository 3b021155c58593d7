"""Rollup arithmetic: unit cases and hypothesis properties (merge == weighted mean, bounds,
order and split independence), plus the outbox drop policy."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.metrics.rollup import (
    HOUR,
    MINUTE,
    Agg,
    bucket_start,
    fold_buckets,
    fold_samples,
    merge_all,
    merge_into,
    wire_number,
)
from agent.store.outbox_policy import PendingInfo, choose_drops, seq_ranges

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
samples = st.lists(
    st.tuples(st.floats(min_value=0, max_value=3 * HOUR), st.sampled_from(["cpu", "mem"]), values),
    max_size=200,
)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


@pytest.mark.parametrize(
    ("value", "wire"),
    [(0.43603515625, 0.436), (24757473280.0, 24760000000), (6.0, 6), (-1.23456, -1.235), (0.0, 0)],
)
def test_wire_number(value: float, wire: float) -> None:
    assert wire_number(value) == wire
    assert type(wire_number(value)) is type(wire)


@given(values)
def test_wire_number_is_within_a_thousandth(v: float) -> None:
    assert abs(wire_number(v) - v) <= abs(v) * 5e-4 + 1e-300


def test_bucket_start() -> None:
    assert bucket_start(59.9, MINUTE) == 0
    assert bucket_start(60, MINUTE) == 60
    assert bucket_start(3599, HOUR) == 0


def test_fold_samples_example_and_nan_skipped() -> None:
    out = fold_samples([(0, "cpu", 1.0), (30, "cpu", 3.0), (61, "cpu", 5.0), (5, "cpu", math.nan)])
    assert out[(0, "cpu")] == Agg(1.0, 3.0, 4.0, 2)
    assert out[(0, "cpu")].avg == 2.0
    assert out[(60, "cpu")].count == 1


def test_stored_round_trip() -> None:
    a = Agg(1.0, 9.0, 20.0, 4)
    b = Agg.from_stored(a.min, a.avg, a.max, a.count)
    assert (b.min, b.max, b.count) == (1.0, 9.0, 4) and close(b.sum, 20.0)


@given(st.lists(st.tuples(values, st.integers(min_value=1, max_value=1000)), min_size=1))
def test_merged_avg_is_weighted_avg(parts: list[tuple[float, int]]) -> None:
    aggs = [Agg(v, v, v * n, n) for v, n in parts]
    m = merge_all(aggs)
    assert m is not None
    total = sum(n for _, n in parts)
    assert m.count == total
    assert close(m.avg, sum(v * n for v, n in parts) / total)


@given(samples)
def test_bounds(data: list[tuple[float, str, float]]) -> None:
    for (start, metric), agg in fold_samples(data).items():
        inside = [v for t, m, v in data if m == metric and bucket_start(t, MINUTE) == start]
        assert agg.min == min(inside) and agg.max == max(inside)
        assert agg.min - 1e-6 <= agg.avg <= agg.max + 1e-6
        assert agg.count == len(inside)


@given(samples, st.randoms(use_true_random=False))
def test_order_independent(data: list[tuple[float, str, float]], rnd: random.Random) -> None:
    shuffled = list(data)
    rnd.shuffle(shuffled)
    a, b = fold_samples(data), fold_samples(shuffled)
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k].min, a[k].max, a[k].count) == (b[k].min, b[k].max, b[k].count)
        assert close(a[k].sum, b[k].sum)


@given(samples, st.integers(min_value=0, max_value=200))
def test_split_then_merge_equals_one_pass(data: list[tuple[float, str, float]], cut: int) -> None:
    # What the store does across a restart: fold part, store, fold the rest and merge.
    whole = fold_samples(data)
    first = fold_samples(data[:cut])
    merged = {**first, **merge_into(first, fold_samples(data[cut:]))}
    assert merged.keys() == whole.keys()
    for k in whole:
        assert (merged[k].min, merged[k].max, merged[k].count) == (
            whole[k].min,
            whole[k].max,
            whole[k].count,
        )
        assert close(merged[k].sum, whole[k].sum)


@given(samples)
def test_hour_from_minutes_equals_hour_from_raw(data: list[tuple[float, str, float]]) -> None:
    minutes = fold_samples(data, MINUTE)
    hours = fold_buckets(((s, m, a) for (s, m), a in minutes.items()), HOUR)
    direct = fold_samples(data, HOUR)
    assert hours.keys() == direct.keys()
    for k in direct:
        assert hours[k].count == direct[k].count and close(hours[k].sum, direct[k].sum)
        assert (hours[k].min, hours[k].max) == (direct[k].min, direct[k].max)


# ---------------------------------------------------------------- outbox drop policy


def rows(kinds: str, size: int = 100, t0: float = 0.0) -> list[PendingInfo]:
    names = {"e": "event", "r": "metrics.1m", "o": "observed", "d": "deployment"}
    return [PendingInfo(i + 1, names[k], size, t0 + i) for i, k in enumerate(kinds)]


def test_nothing_dropped_within_bounds() -> None:
    assert choose_drops(rows("erod"), max_bytes=400, max_age=100, now=10) == []


def test_superseded_observed_then_rollups_then_rest() -> None:
    rs = rows("oerroe")  # seqs 1..6: o e r r o e
    assert choose_drops(rs, max_bytes=500, max_age=1e9, now=0) == [1]
    assert choose_drops(rs, max_bytes=300, max_age=1e9, now=0) == [1, 3, 4]
    assert choose_drops(rs, max_bytes=200, max_age=1e9, now=0) == [1, 2, 3, 4]


def test_age_bound_drops_rollups_and_snapshots_but_not_events() -> None:
    # seqs 1..5 = r e o d r, created at t = 0..4; everything but the last is "old".
    assert choose_drops(rows("reodr", t0=0), max_bytes=10**9, max_age=1, now=4.5) == [1]
    # The newest snapshot is kept however old it is: it is the current state.
    assert choose_drops(rows("reoor", t0=0), max_bytes=10**9, max_age=1, now=4.5) == [1, 3]


@given(
    st.lists(st.sampled_from("eord"), max_size=60),
    st.integers(min_value=0, max_value=8000),
)
def test_policy_properties(kinds: list[str], budget: int) -> None:
    rs = rows("".join(kinds))
    drops = set(choose_drops(rs, max_bytes=budget, max_age=1e9, now=0))
    kept = [r for r in rs if r.seq not in drops]
    assert sum(r.size for r in kept) <= max(budget, 0) or not kept
    # Nothing is dropped needlessly: an event goes only once no rollup/old snapshot is left.
    if any(r.kind == "event" and r.seq in drops for r in rs):
        assert not [r for r in kept if r.kind == "metrics.1m"]
    # The newest observed snapshot outlives the older ones.
    obs = [r.seq for r in rs if r.kind == "observed"]
    if obs and obs[-1] in drops:
        assert all(s in drops for s in obs)


@pytest.mark.parametrize(
    ("seqs", "ranges"), [([], []), ([1, 2, 3, 7, 9, 10], [[1, 3], [7, 7], [9, 10]])]
)
def test_seq_ranges(seqs: list[int], ranges: list[list[int]]) -> None:
    assert seq_ranges(seqs) == ranges
