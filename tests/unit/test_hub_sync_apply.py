"""The ingest's apply step on a real SQLite store, without NATS: any arrival order,
duplication and garbage leaves every row applied exactly once, in order."""

from __future__ import annotations

import tempfile
from collections import deque
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.store import Store
from hub.sync.apply import GIVE_UP_DELIVERIES, Applier, Fetched
from protocol.messages import ReportBatch, ReportRow
from protocol.subjects import report


def rows(first: int, n: int) -> tuple[ReportRow, ...]:
    return tuple(
        ReportRow(
            s,
            "event",
            1.0,
            {"seq": s, "kind": "t", "severity": "info", "message": "", "data": None, "ts": 1.0},
        )
        for s in range(first, first + n)
    )


def msg(batch: ReportBatch, delivered: int = 1, msg_id: str | None = None) -> Fetched:
    return Fetched(report(batch.device_id), batch.to_json(), msg_id or batch.msg_id, delivered)


def fresh_store(tmp: Path) -> Store:
    store = Store.open(tmp / "hub.db")
    store.upsert_device("d1", "acme")
    return store


def seqs(store: Store) -> list[int]:
    return [r[0] for r in store.conn.execute("SELECT seq FROM events WHERE kind = 't' ORDER BY id")]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=8),
    order=st.randoms(use_true_random=False),
    dups=st.lists(st.integers(0, 20), max_size=6),
    per_fetch=st.integers(1, 5),
)
def test_any_order_and_duplication_applies_each_row_once(
    sizes: list[int], order: object, dups: list[int], per_fetch: int
) -> None:
    batches: list[ReportBatch] = []
    first, prev = 1, 0
    for n in sizes:
        b = ReportBatch("d1", rows(first, n), prev_seq=prev)
        batches.append(b)
        prev, first = b.last_seq, first + n
    queue = [msg(b) for b in batches]
    queue += [queue[i % len(queue)] for i in dups]  # redeliveries / resends
    order.shuffle(queue)  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as tmp:
        store = fresh_store(Path(tmp))
        applier = Applier()
        pending = deque(queue)
        for _ in range(10_000):  # bounded: naks come back with one more delivery
            if not pending:
                break
            fetch = [pending.popleft() for _ in range(min(per_fetch, len(pending)))]
            out = applier.apply_fetch(store, fetch)
            for m, action in zip(fetch, out.actions, strict=True):
                if action == "nak":
                    pending.append(Fetched(m.subject, m.data, m.msg_id, m.delivered + 1))
                assert action != "term"
        assert not pending
        assert seqs(store) == list(range(1, first))
        assert store.last_applied_seq("d1") == first - 1
        assert store.scalar("SELECT count(*) FROM events WHERE kind = 'sync_gap'") == 0
        store.close()


def test_garbage_is_termed_and_recorded_never_raised(tmp_path: Path) -> None:
    store = fresh_store(tmp_path)
    applier = Applier()
    good = ReportBatch("d1", rows(1, 2))
    fetch = [
        Fetched("sb.dev.d1.report", b"\xff\xfe", "d1:1-1", 1),
        Fetched("sb.dev.d1.report", b'{"v":1}', "d1:1-1", 1),
        Fetched("sb.dev.d1.report", good.to_json(), None, 1),  # no msg id
        Fetched("sb.dev.d2.report", good.to_json(), "d1:1-2", 1),  # body names another device
        Fetched(
            "sb.dev.nobody.report", ReportBatch("nobody", rows(1, 1)).to_json(), "nobody:1-1", 1
        ),
        Fetched("weird", b"{}", None, 1),
        msg(good),
    ]
    out = applier.apply_fetch(store, fetch)
    assert out.actions == ["term"] * 6 + ["ack"]
    assert [code for _, code, _ in out.bad][:2] == ["bad_request", "invalid"]
    assert out.bad[4][1] == "unknown_device"
    assert seqs(store) == [1, 2]
    # Rate-limited: one bad_message event per sender within BAD_EVENT_EVERY.
    assert store.scalar("SELECT count(*) FROM events WHERE kind = 'bad_message'") == 2


def test_a_batch_waiting_too_long_is_applied_with_a_gap(tmp_path: Path) -> None:
    store = fresh_store(tmp_path)
    applier = Applier()
    late = ReportBatch("d1", rows(5, 2), prev_seq=4)
    assert applier.apply_fetch(store, [msg(late)]).actions == ["nak"]
    out = applier.apply_fetch(store, [msg(late, delivered=GIVE_UP_DELIVERIES)])
    assert out.actions == ["ack"] and out.gaps == 1
    assert seqs(store) == [5, 6]
    assert store.scalar("SELECT data FROM events WHERE kind = 'sync_gap'") == '{"from": 1, "to": 4}'
    # The rows that finally arrive are replays of nothing new: ignored, no doubling.
    out = applier.apply_fetch(store, [msg(ReportBatch("d1", rows(1, 4)))])
    assert out.actions == ["ack"] and out.replayed_rows == 4 and seqs(store) == [5, 6]


def test_malformed_rows_are_skipped_but_their_seq_is_consumed(tmp_path: Path) -> None:
    store = fresh_store(tmp_path)
    batch = ReportBatch(
        "d1",
        (
            ReportRow(1, "metrics.1m", 1.0, {"bucket": 60, "metrics": {"cpu": [1, 2, 3, 4]}}),
            ReportRow(2, "metrics.1m", 1.0, {"bucket": "x"}),
            ReportRow(3, "observed", 1.0, ["not", "an", "object"]),
            ReportRow(
                4, "deployment", 1.0, {"generation": 2, "status": "healthy", "bundle_ref": "a@1"}
            ),
            ReportRow(5, "future.kind", 1.0, {"anything": True}),
        ),
    )
    out = Applier().apply_fetch(store, [msg(batch)])
    assert out.actions == ["ack"] and out.skipped_rows == 2 and out.applied_rows == 3
    assert store.last_applied_seq("d1") == 5
    assert store.get_metrics("d1") == [
        {"name": "cpu", "ts": 60, "min": 1.0, "avg": 2.0, "max": 3.0}
    ]
    rep = store.get_reported("d1")
    assert rep is not None and rep["state"]["deployment"]["status"] == "healthy"
    assert rep["state"]["running"]["bundle_ref"] == "a@1"
    assert store.scalar("SELECT count(*) FROM events WHERE kind = 'bad_rows'") == 1
