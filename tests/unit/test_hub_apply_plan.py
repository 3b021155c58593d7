"""plan_apply, the hub's ingest rule: whatever the order, duplication and overtaking of the
device's batches in the stream, each row is applied once and in sequence order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.sync.apply_plan import plan_apply
from protocol.report import ReportBatch, ReportRow

DEV = "dev-1"


def batch(seqs: list[int], prev: int) -> ReportBatch:
    return ReportBatch(DEV, tuple(ReportRow(s, "event", 1.0, {"s": s}) for s in seqs), prev)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[int], list[ReportBatch]]:
    """Rows 1..n, some dropped by the device (announced gaps), cut into chained batches; the
    stream holds each batch one or more times in any order (overtakes and resends)."""
    n = draw(st.integers(1, 60))
    dropped = draw(st.sets(st.integers(1, n), max_size=n // 4))
    kept = [s for s in range(1, n + 1) if s not in dropped]
    batches: list[ReportBatch] = []
    i, prev = 0, 0
    while i < len(kept):
        chunk = kept[i : i + draw(st.integers(1, 8))]
        batches.append(batch(chunk, prev))  # chained: names the row sent just before it
        prev = chunk[-1]
        i += len(chunk)
    copies = [b for b in batches for _ in range(draw(st.integers(1, 3)))]
    order = draw(st.permutations(copies))
    return kept, list(order)


@settings(max_examples=300)
@given(deliveries())
def test_every_row_once_in_order(case: tuple[list[int], list[ReportBatch]]) -> None:
    kept, stream = case
    queue = list(stream)
    applied: list[int] = []
    last = 0
    for _ in range(len(queue) * (len(queue) + 1) + 1):  # bounded: NAKs requeue at the back
        if not queue:
            break
        b = queue.pop(0)
        plan = plan_apply(b, last)
        if plan.wait:
            queue.append(b)  # nak(delay): redelivered later
            continue
        applied.extend(r.seq for r in plan.rows)
        last = plan.last_applied
    assert not queue
    assert applied == kept


def test_wait_then_apply_and_gaps() -> None:
    b2 = batch([4, 5], prev=3)
    assert plan_apply(b2, 0).wait
    p1 = plan_apply(batch([1, 3], prev=0), 0)  # 2 was dropped by the device
    assert p1.gaps == ((2, 2),) and p1.last_applied == 3
    p2 = plan_apply(b2, p1.last_applied)
    assert not p2.wait and [r.seq for r in p2.rows] == [4, 5] and p2.gaps == ()
    again = plan_apply(b2, 5)
    assert again.rows == () and again.replayed == 2 and again.last_applied == 5
    forced = plan_apply(batch([9], prev=8), 5, force=True)
    assert forced.gaps == ((6, 8),) and forced.last_applied == 9


def test_a_jump_beyond_max_seq_is_never_adopted() -> None:
    far = ReportBatch("d", (ReportRow(2**63 - 1, "event", 1.0, {}),))
    plan = plan_apply(far, 10, max_seq=500)
    assert plan.too_far and not plan.rows and plan.last_applied == 10
    # Even forced (waited long for an earlier batch), it is not adopted.
    assert plan_apply(far, 10, force=True, max_seq=500).too_far
    near = ReportBatch("d", (ReportRow(400, "event", 1.0, {}),))
    ok = plan_apply(near, 10, max_seq=500)
    assert not ok.too_far and ok.last_applied == 400 and ok.gaps == ((11, 399),)
    # A replay below the position is never "too far", whatever the limit.
    assert not plan_apply(near, 1000, max_seq=5).too_far


@settings(max_examples=200)
@given(st.integers(0, 10**6), st.integers(1, 2**63 - 1), st.integers(0, 10**6))
def test_the_position_never_passes_max_seq(last: int, seq: int, max_seq: int) -> None:
    plan = plan_apply(ReportBatch("d", (ReportRow(seq, "event", 1.0, {}),)), last, max_seq=max_seq)
    assert plan.last_applied <= max(last, max_seq)
