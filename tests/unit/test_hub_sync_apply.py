"""The ingest's apply step on a real SQLite store, without NATS: any arrival order,
duplication and garbage leaves every row applied exactly once, in order."""

from __future__ import annotations

import tempfile
from collections import deque
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.store import Store
from hub.sync.apply import (
    GIVE_UP_DELIVERIES,
    JUMP_WAIT_DELIVERIES,
    POISON_DELIVERIES,
    SEQ_SLACK,
    Applier,
    Fetched,
)
from protocol.report import ReportBatch, ReportRow
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
        Fetched("sb.dev.d1.report", good.to_json(), "d2:1-2", 1),  # another device's msg id
        Fetched("sb.dev.d2.report", good.to_json(), "d1:1-2", 1),  # body names another device
        Fetched(
            "sb.dev.nobody.report", ReportBatch("nobody", rows(1, 1)).to_json(), "nobody:1-1", 1
        ),
        Fetched("weird", b"{}", None, 1),
        Fetched("sb.dev.d1.report", good.to_json(), None, 1),  # no msg id: agents send none
        msg(good),  # an older agent's id: checked, and a replay
    ]
    out = applier.apply_fetch(store, fetch)
    assert out.actions == ["term"] * 6 + ["ack", "ack"]
    assert [code for _, code, _ in out.bad][:2] == ["bad_request", "invalid"]
    assert out.bad[4][1] == "unknown_device"
    assert out.replayed_rows == 2
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


def test_a_batch_never_gives_up_while_the_stream_holds_its_predecessor(tmp_path: Path) -> None:
    # A consumer killed with the earlier batch unacked: the stream still holds it and
    # redelivers it after ACK_WAIT. Giving up first would drop its rows as replays.
    store = fresh_store(tmp_path)
    applier = Applier()
    late = ReportBatch("d1", rows(5, 2), prev_seq=4)
    held = replace(msg(late, delivered=GIVE_UP_DELIVERIES * 3), earlier_stored=True)
    assert applier.apply_fetch(store, [held]).actions == ["nak"]
    out = applier.apply_fetch(store, [msg(ReportBatch("d1", rows(1, 4))), held])
    assert out.actions == ["ack", "ack"] and out.gaps == 0
    assert seqs(store) == [1, 2, 3, 4, 5, 6]


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


def events(store: Store, kind: str) -> list[tuple[str, str]]:
    return [
        (r[0], r[1])
        for r in store.conn.execute(
            "SELECT device_id, data FROM events WHERE kind = ? ORDER BY id", (kind,)
        )
    ]


def test_a_store_that_began_again_is_applied_under_its_new_epoch(tmp_path: Path) -> None:
    """A device whose database was deleted numbers from 1 again under a new epoch: applied,
    announced once; an older agent (no epoch) keeps the one numbering it had."""
    store = fresh_store(tmp_path)
    a = Applier()
    first = ReportBatch("d1", rows(1, 5), epoch="aaa")
    assert a.apply_fetch(store, [msg(first)]).actions == ["ack"]
    assert events(store, "store_reset") == []  # a device's first store is nothing "again"
    again = ReportBatch("d1", rows(1, 3), epoch="bbb")
    out = a.apply_fetch(store, [msg(again)])
    assert out.actions == ["ack"] and out.store_resets == 1 and out.applied_rows == 3
    assert seqs(store) == [1, 2, 3, 4, 5, 1, 2, 3]
    assert store.sync_epoch("d1") == ("bbb", 3)
    (dev, data), *_ = events(store, "store_reset")
    assert dev == "d1" and '"previous_last_applied": 5' in data
    # A late report of the old store still in the stream: against its own numbering.
    late = ReportBatch("d1", rows(6, 2), prev_seq=5, epoch="aaa")
    assert a.apply_fetch(store, [msg(late)]).actions == ["ack"]
    assert seqs(store)[-2:] == [6, 7] and store.sync_epoch("d1") == ("bbb", 3)
    # Replays of either are replays.
    out = a.apply_fetch(store, [msg(again), msg(late)])
    assert out.replayed_rows == 5 and len(seqs(store)) == 10
    assert len(events(store, "store_reset")) == 1


def test_an_old_agent_starting_again_from_one_is_not_silent(tmp_path: Path) -> None:
    store = fresh_store(tmp_path)
    a = Applier()
    a.apply_fetch(store, [msg(ReportBatch("d1", rows(1, 20)))])
    out = a.apply_fetch(store, [msg(ReportBatch("d1", rows(1, 3)))])
    assert out.replayed_rows == 3 and len(seqs(store)) == 20
    assert len(events(store, "sync_replay")) == 1


def test_a_sequence_jump_is_refused_not_adopted(tmp_path: Path) -> None:
    store = fresh_store(tmp_path)
    a = Applier()
    a.apply_fetch(store, [msg(ReportBatch("d1", rows(1, 3)))])
    far = ReportBatch("d1", rows(2**63 - 1, 1), prev_seq=3)
    assert a.apply_fetch(store, [msg(far)]).actions == ["nak"]  # waits for a heartbeat
    out = a.apply_fetch(store, [msg(far, delivered=JUMP_WAIT_DELIVERIES)])
    assert out.actions == ["term"] and out.seq_jumps == 1
    assert [c for _, c, _ in out.bad] == ["seq_jump"]
    assert store.last_applied_seq("d1") == 3
    assert len(events(store, "sync_seq_jump")) == 1
    # The device's real next rows apply as usual.
    a.apply_fetch(store, [msg(ReportBatch("d1", rows(4, 2), prev_seq=3))])
    assert store.last_applied_seq("d1") == 5 and seqs(store) == [1, 2, 3, 4, 5]


def test_a_jump_its_heartbeat_explains_is_applied(tmp_path: Path) -> None:
    """Rows the device dropped while offline (or an older agent's store recovered at a
    wall-clock base) are a jump its heartbeat's last_seq vouches for."""
    store = fresh_store(tmp_path)
    a = Applier()
    base = SEQ_SLACK * 100
    store.put_heartbeats([("d1", f'{{"last_seq": {base + 10}}}', "0.1", "t", "t")])
    out = a.apply_fetch(store, [msg(ReportBatch("d1", rows(base, 2)))])
    assert out.actions == ["ack"] and store.last_applied_seq("d1") == base + 1


def test_out_of_range_payload_values_skip_the_row_only(tmp_path: Path) -> None:
    store = fresh_store(tmp_path)
    ev = rows(1, 1)[0].payload
    batch = ReportBatch(
        "d1",
        (
            ReportRow(1, "event", 1.0, {**ev, "ts": 1e300}),
            ReportRow(2, "event", 1.0, {**ev, "ts": -1e20}),
            ReportRow(3, "event", 1.0, {**ev, "seq": 10**30}),
            ReportRow(4, "metrics.1m", 1.0, {"bucket": 10**30, "metrics": {"c": [1, 1, 1, 1]}}),
            ReportRow(5, "observed", 1.0, {"containers": [], "ts": 1e300}),
            *rows(6, 1),
        ),
    )
    out = Applier().apply_fetch(store, [msg(batch)])
    assert out.actions == ["ack"] and out.skipped_rows == 5 and seqs(store) == [6]
    assert store.last_applied_seq("d1") == 6


def test_a_message_that_raises_is_rolled_back_alone(tmp_path: Path) -> None:
    """Whatever the checks miss (here a row handler that overflows on one device's value)
    never fails the fetch for the other devices' rows."""
    store = fresh_store(tmp_path)
    store.upsert_device("d2", "acme")
    a = Applier()

    def handler(st: Store, device_id: str, rs: object) -> None:
        if device_id == "d2":
            st.conn.execute("SELECT ?", (10**30,))  # OverflowError, as the issue saw

    a.row_handlers.append(handler)
    bad = ReportBatch("d2", rows(1, 2))
    fetch = [msg(ReportBatch("d1", rows(1, 2))), msg(bad), msg(ReportBatch("d1", rows(3, 1), 2))]
    out = a.apply_fetch(store, fetch)
    assert out.actions == ["ack", "nak", "ack"] and out.poison == 1
    assert store.last_applied_seq("d1") == 3 and store.last_applied_seq("d2") == 0
    d2 = "SELECT count(*) FROM events WHERE device_id = 'd2' AND kind = 't'"
    assert store.scalar(d2) == 0  # its rows were rolled back with it
    out = a.apply_fetch(store, [msg(bad, delivered=POISON_DELIVERIES)])
    assert out.actions == ["term"] and [c for _, c, _ in out.bad] == ["unprocessable"]
    assert events(store, "bad_message")[0][0] == "d2"
