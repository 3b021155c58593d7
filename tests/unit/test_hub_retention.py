"""Retention: the config it reads, the cut-off policy, and the store's chunked prunes (on an
in-memory store: pure logic; tests/integration/test_hub_retention.py runs the real task)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.config import HubConfig, parse_toml, render_toml
from hub.errors import ConfigError
from hub.retention import HOUR, RetentionPolicy, cutoffs
from hub.store import Store
from hub.timeutil import now_iso

DAY = 24 * HOUR
NOW = 1_750_000_000.0


def test_defaults_and_round_trip() -> None:
    policy = RetentionPolicy.from_config(HubConfig())
    assert policy == RetentionPolicy(48 * HOUR, 90 * DAY, 30 * DAY, 100, 600)
    cfg = HubConfig(retention_events="forever", retention_metrics_1h="0", retention_interval="1h")
    assert parse_toml(render_toml(cfg)) == cfg
    p = RetentionPolicy.from_config(cfg)
    assert p.events is None and p.metrics_1h is None and p.interval == HOUR and p.enabled
    off = HubConfig(retention_metrics_1m="0", retention_metrics_1h="0", retention_events="0")
    assert not RetentionPolicy.from_config(off).enabled


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("retention_metrics_1m = '48m'", "retention_metrics_1m"),  # under 1h: a typo for 48h?
        ("retention_metrics_1h = '90'", "retention_metrics_1h"),
        ("retention_events = '-3d'", "retention_events"),
        ("retention_events = 30", "retention_events"),
        ("retention_events = 'soon'", "retention_events"),
        ("retention_interval = '0'", "retention_interval"),
        ("retention_interval = 'forever'", "retention_interval"),
        ("retention_events_keep = -1", "retention_events_keep"),
        ("retention_events_keep = '100'", "retention_events_keep"),
    ],
)
def test_bad_retention_names_the_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_toml(text)
    assert exc.value.field == field
    assert field in str(exc.value)


@given(
    now=st.floats(min_value=1e9, max_value=4e9, allow_nan=False),
    window=st.integers(min_value=HOUR, max_value=400 * DAY),
    age=st.floats(min_value=0, max_value=1.0),
)
def test_cutoffs_never_cut_inside_the_window(now: float, window: int, age: float) -> None:
    policy = RetentionPolicy(window, window, window)
    cut = cutoffs(policy, now)
    assert cut.metrics_1m is not None and cut.metrics_1h is not None and cut.events is not None
    # Metric cut-offs: whole hours, at most one hour older than the window's start.
    assert cut.metrics_1m % HOUR == 0
    assert now - window - HOUR < cut.metrics_1m <= now - window
    # Any row stamped inside the window sorts at or after the cut-off.
    inside = now - window * age
    assert int(inside) >= cut.metrics_1m
    assert now_iso(inside) >= cut.events


def test_forever_has_no_cutoff() -> None:
    cut = cutoffs(RetentionPolicy(None, None, None), NOW)
    assert (cut.metrics_1m, cut.metrics_1h, cut.events) == (None, None, None)


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store.open(":memory:")
    yield s
    s.close()


def _drain_metrics(store: Store, cutoff: int, rows: int, series: int) -> int:
    deleted, pos, done, chunks = 0, None, False, 0
    while not done:
        n, pos, done = store.prune_metrics_chunk("1m", cutoff, pos, rows, series)
        assert n <= rows
        deleted += n
        chunks += 1
        assert chunks < 10_000
    return deleted


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.sampled_from(["d1", "d2", "d3"]),
            st.sampled_from(["cpu", "mem"]),
            st.integers(min_value=0, max_value=200),
        ),
        max_size=120,
    ),
    cutoff=st.integers(min_value=0, max_value=210),
    rows=st.integers(min_value=1, max_value=20),
    series=st.integers(min_value=1, max_value=4),
)
def test_metric_prune_removes_exactly_the_expired_rows(
    data: list[tuple[str, str, int]], cutoff: int, rows: int, series: int
) -> None:
    store = Store.open(":memory:")
    try:
        for d in ("d1", "d2", "d3"):
            store.upsert_device(d, "t")
        keyed = {(d, n, ts * 60) for d, n, ts in data}
        store.put_metric_rows("1m", [(d, n, ts, 1.0, 2.0, 3.0) for d, n, ts in keyed])
        deleted = _drain_metrics(store, cutoff * 60, rows, series)
        left = {
            (r["device_id"], r["name"], r["ts"])
            for r in store.rows("SELECT device_id, name, ts FROM metrics_1m")
        }
        assert left == {k for k in keyed if k[2] >= cutoff * 60}
        assert deleted == len(keyed) - len(left)
    finally:
        store.close()


def _drain_events(store: Store, cutoff: str, keep: int, rows: int) -> int:
    deleted, pos, done = 0, None, False
    floors: dict[str | None, int] = {}
    while not done:
        n, pos, done = store.prune_events_chunk(cutoff, keep, pos, rows, floors)
        deleted += n
    return deleted


def test_event_prune_spares_the_newest_of_active_devices_and_the_hub(store: Store) -> None:
    for d in ("live", "quiet", "gone"):
        store.upsert_device(d, "t")
    store.decommission_device("gone")
    old, new = now_iso(NOW - 40 * DAY), now_iso(NOW - DAY)
    rows = []
    for device, n_old, n_new in [
        ("live", 8, 3),  # 3 new + newest 2 old kept of keep=5
        ("quiet", 4, 0),  # fewer than keep: all kept despite their age
        ("gone", 6, 1),  # decommissioned: no protection
        ("stranger", 2, 0),  # not a known device: no protection
        (None, 7, 0),  # the hub's own events: newest 5 kept
    ]:
        rows += [(device, old, "k", "", "{}", None, "info")] * n_old
        rows += [(device, new, "k", "", "{}", None, "info")] * n_new
    store.add_events(rows)
    deleted = _drain_events(store, now_iso(NOW - 30 * DAY), keep=5, rows=3)
    counts = {
        (r["device_id"], r["ts"]): r["n"]
        for r in store.rows("SELECT device_id, ts, count(*) AS n FROM events GROUP BY 1, 2")
    }
    assert counts == {
        ("live", old): 2,
        ("live", new): 3,
        ("quiet", old): 4,
        ("gone", new): 1,
        (None, old): 5,
    }
    assert deleted == 6 + 6 + 2 + 2
    # The kept rows are the newest of each device, not arbitrary ones.
    live = [r["id"] for r in store.rows("SELECT id FROM events WHERE device_id = 'live'")]
    assert live == sorted(live)[-5:]


def test_event_prune_with_keep_zero_is_by_age_alone(store: Store) -> None:
    store.upsert_device("live", "t")
    old, new = now_iso(NOW - 40 * DAY), now_iso(NOW - DAY)
    store.add_events([("live", old, "k", "", "{}", None, "info")] * 4)
    store.add_events([("live", new, "k", "", "{}", None, "info")] * 2)
    assert _drain_events(store, now_iso(NOW - 30 * DAY), keep=0, rows=2) == 4
    assert store.scalar("SELECT count(*) FROM events") == 2
