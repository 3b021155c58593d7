"""The hourly rollup folded from each new minute (``Store.fold_minutes``) equals the hour
recomputed from all of its minutes (``Store.rollup_hours``, the path before the fold), over
random report streams: minutes in and out of order, rewritten by later rows, replayed
deliveries, several devices and metrics per fetch, and hour rows from before migration 16."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.store import Store, migrations
from hub.sync.apply import Applier, Fetched
from hub.sync.rows import HOUR, fold
from protocol.report import ReportBatch, ReportRow, decode_report
from protocol.subjects import device_from_subject, report

DEVICES = ("a", "b")
NAMES = ("cpu", "mem")


@contextmanager
def store_at(path: Path) -> Iterator[Store]:
    s = Store.open(path)
    try:
        for d in DEVICES:
            s.upsert_device(d, "acme")
        yield s
    finally:
        s.close()


values = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
# (device, minute index within 3 hours, {name: (lo, avg, hi)}): one metrics.1m row.
minute_rows = st.tuples(
    st.sampled_from(DEVICES),
    st.integers(min_value=0, max_value=3 * 60 - 1),
    st.dictionaries(st.sampled_from(NAMES), st.tuples(values, values, values), min_size=1),
)
# Messages of up to 4 rows each, cut into fetches; some messages delivered twice.
streams = st.lists(
    st.tuples(st.lists(minute_rows, min_size=1, max_size=4), st.booleans(), st.integers(0, 2)),
    min_size=1,
    max_size=25,
)

BASE = 1_700_000_000 // HOUR * HOUR


def _row(seq: int, minute: int, metrics: dict[str, tuple[float, float, float]]) -> ReportRow:
    payload = {
        "bucket": BASE + minute * 60,
        "metrics": {n: [min(v), v[1], max(v), 6] for n, v in metrics.items()},
    }
    return ReportRow(seq, "metrics.1m", 5.0, payload)


def _messages(stream: list[Any]) -> list[list[Fetched]]:
    """The stream as fetches of report messages, each device's rows chained from seq 1."""
    seqs = dict.fromkeys(DEVICES, 0)
    fetches: list[list[Fetched]] = [[]]
    for rows, replay, cut in stream:
        for device in DEVICES:
            mine = [r for r in rows if r[0] == device]
            if not mine:
                continue
            prev = seqs[device]
            batch_rows = tuple(
                _row(prev + i + 1, m, metrics) for i, (_, m, metrics) in enumerate(mine)
            )
            seqs[device] = prev + len(mine)
            b = ReportBatch(device, batch_rows, prev_seq=prev)
            msg = Fetched(report(device), b.to_json(), None, 1)
            fetches[-1].append(msg)
            if replay:  # the same message again (a redelivery): changes nothing
                fetches[-1].append(msg)
        if cut:
            fetches.append([])
    return [f for f in fetches if f]


def _old_path(store: Store, fetches: list[list[Fetched]]) -> None:
    """What ingest did before the fold: minutes upserted (a later row for the same minute
    wins), every touched hour recomputed from its minutes once per fetch. Replays are
    skipped by seq as the applier does."""
    applied = dict.fromkeys(DEVICES, 0)
    for fetch in fetches:
        hours: set[tuple[str, str, int]] = set()
        for m in fetch:
            b = decode_report(m.data, subject_device=device_from_subject(m.subject))
            rows = [r for r in b.rows if r.seq > applied[b.device_id]]
            for r in rows:
                ts = int(r.payload["bucket"])
                for name, agg in r.payload["metrics"].items():
                    store.put_metric_rows("1m", [(b.device_id, name, ts, *agg[:3])])
                    hours.add((b.device_id, name, ts // HOUR * HOUR))
            applied[b.device_id] = max(applied[b.device_id], b.last_seq)
        store.rollup_hours(sorted(hours))


def _table(
    store: Store, table: str, cols: str = "min, avg, max"
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    rows = store.conn.execute(f"SELECT device_id, name, ts, {cols} FROM {table}").fetchall()
    return {tuple(r[:3]): tuple(r[3:]) for r in rows}


def _same_hours(new: dict[Any, Any], old: dict[Any, Any]) -> None:
    assert new.keys() == old.keys()
    for key, (lo, avg, hi) in old.items():
        nlo, navg, nhi = new[key][:3]
        # min and max exactly; the mean up to the order its terms were summed in.
        assert (nlo, nhi) == (lo, hi), key
        assert math.isclose(navg, avg, rel_tol=1e-12, abs_tol=1e-9), key


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams, st.integers(0, 10))
def test_fold_equals_recompute_over_random_streams(stream: list[Any], legacy_at: int) -> None:
    fetches = _messages(stream)
    with (
        tempfile.TemporaryDirectory() as tmp,
        store_at(Path(tmp) / "new.db") as new,
        store_at(Path(tmp) / "old.db") as old,
    ):
        applier = Applier()
        for i, fetch in enumerate(fetches):
            if i == legacy_at:
                # Hour rows written before migration 16 carry no count: the next minute of
                # such an hour must recompute it, not fold into it.
                new.conn.execute("UPDATE metrics_1h SET n = NULL, total = NULL")
            out = applier.apply_fetch(new, fetch)
            assert set(out.actions) == {"ack"}
        _old_path(old, fetches)
        assert _table(new, "metrics_1m") == _table(old, "metrics_1m")
        _same_hours(_table(new, "metrics_1h"), _table(old, "metrics_1h"))
        # Every foldable hour row counts exactly the minutes it holds.
        for (d, name, h), (n,) in _table(new, "metrics_1h", "n").items():
            held = new.conn.execute(
                "SELECT count(*) FROM metrics_1m WHERE device_id = ? AND name = ?"
                " AND ts >= ? AND ts < ?",
                (d, name, h, h + HOUR),
            ).fetchone()[0]
            assert n is None or n == held


@given(st.lists(st.tuples(st.sampled_from(DEVICES), st.sampled_from(NAMES),
                          st.integers(0, 3 * HOUR), values, values, values), max_size=60))  # fmt: skip
def test_fold_sums_per_hour(minutes: list[tuple[str, str, int, float, float, float]]) -> None:
    got = {(d, n, h): (lo, hi, total, k) for d, n, h, lo, hi, total, k in fold(minutes)}
    want: dict[tuple[str, str, int], list[tuple[float, float, float]]] = {}
    for d, n, ts, lo, avg, hi in minutes:
        want.setdefault((d, n, ts // HOUR * HOUR), []).append((lo, avg, hi))
    assert got.keys() == want.keys()
    for key, rows in want.items():
        lo, hi, total, k = got[key]
        assert (lo, hi, k) == (min(r[0] for r in rows), max(r[2] for r in rows), len(rows))
        assert math.isclose(total, sum(r[1] for r in rows), rel_tol=1e-12, abs_tol=1e-9)


def test_in_order_minutes_fold_to_exactly_the_recompute() -> None:
    """Minutes arriving in time order (every agent's case) are summed in the order the
    recompute sums them: the folded hour equals it to the last bit."""
    with tempfile.TemporaryDirectory() as tmp, store_at(Path(tmp) / "hub.db") as store:
        applier = Applier()
        for minute in range(60):
            seq = minute + 1
            v = (minute * 0.37) % 7.1 + 0.1
            b = ReportBatch(
                "a", (_row(seq, minute, {"cpu": (v, v * 1.3, v * 2.1)}),), prev_seq=seq - 1
            )
            applier.apply_fetch(store, [Fetched(report("a"), b.to_json(), None, 1)])
        folded = _table(store, "metrics_1h", "min, avg, max, n")
        store.rollup_hours([("a", "cpu", BASE)])
        assert _table(store, "metrics_1h", "min, avg, max, n") == folded
        assert folded[("a", "cpu", BASE)][3] == 60


def test_a_rewritten_minute_is_replaced_and_its_hour_recomputed() -> None:
    with tempfile.TemporaryDirectory() as tmp, store_at(Path(tmp) / "hub.db") as store:
        applier = Applier()
        b1 = ReportBatch(
            "a", (_row(1, 0, {"cpu": (1, 5, 9)}), _row(2, 1, {"cpu": (2, 3, 4)})), prev_seq=0
        )
        b2 = ReportBatch("a", (_row(3, 0, {"cpu": (3, 3, 3)}),), prev_seq=2)
        for b in (b1, b2):
            applier.apply_fetch(store, [Fetched(report("a"), b.to_json(), None, 1)])
        assert store.get_metrics("a", "1h") == [
            {"name": "cpu", "ts": BASE, "min": 2.0, "avg": 3.0, "max": 4.0}
        ]
        assert _table(store, "metrics_1h", "n, total")[("a", "cpu", BASE)] == (2, 6.0)


def test_migration_16_leaves_old_hours_to_a_recompute(monkeypatch: pytest.MonkeyPatch) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hub.db"
        with monkeypatch.context() as m:
            m.setattr(migrations, "MIGRATIONS", [x for x in migrations.MIGRATIONS if x[0] < 16])
            old = Store.open(path)
        old.upsert_device("a", "acme")
        old.put_metric_rows("1m", [("a", "cpu", BASE, 1.0, 2.0, 3.0)])
        old.conn.execute(
            "INSERT INTO metrics_1h (device_id, name, ts, min, avg, max) VALUES (?, ?, ?, ?, ?, ?)",
            ("a", "cpu", BASE, 1.0, 2.0, 3.0),
        )
        old.close()
        store = Store.open(path)
        try:
            assert _table(store, "metrics_1h", "min, avg, max, n") == {
                ("a", "cpu", BASE): (1.0, 2.0, 3.0, None)
            }
            b = ReportBatch("a", (_row(1, 1, {"cpu": (5, 6, 7)}),), prev_seq=0)
            Applier().apply_fetch(store, [Fetched(report("a"), b.to_json(), None, 1)])
            # Recomputed from both minutes (the one from before the migration included).
            assert _table(store, "metrics_1h", "min, avg, max, n, total") == {
                ("a", "cpu", BASE): (1.0, 4.0, 7.0, 2, 8.0)
            }
        finally:
            store.close()
