"""agent.sync.batching: every row once, in order, every message within bounds and decodable."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from agent.sync.batching import OVERSIZED_KIND, pack
from protocol.report import decode_report, parse_msg_id

DEV = "dev-7"


@st.composite
def outbox_rows(draw: st.DrawFn) -> list[tuple[int, str, float, str]]:
    n = draw(st.integers(0, 60))
    seq = draw(st.integers(1, 10**9))
    rows = []
    for _ in range(n):
        seq += draw(st.integers(1, 3))  # gaps: rows dropped while offline
        size = draw(st.integers(0, 900))
        rows.append((seq, "event", 1.0 + seq, json.dumps({"x": "y" * size})))
    return rows


@given(outbox_rows(), st.integers(300, 4000), st.integers(1, 50))
def test_pack_preserves_rows_and_bounds(
    rows: list[tuple[int, str, float, str]], max_bytes: int, max_rows: int
) -> None:
    prev = rows[0][0] - 1 if rows else 0
    batches = pack(DEV, rows, max_bytes=max_bytes, max_rows=max_rows, prev_seq=prev)
    seen = []
    for b in batches:
        # Chained: each batch names the last row of the one before it.
        assert b.prev_seq == prev
        prev = b.last_seq
        assert len(b.body) <= max_bytes
        assert 1 <= b.rows <= max_rows
        decoded = decode_report(b.body, subject_device=DEV)
        assert decoded.prev_seq == b.prev_seq
        assert parse_msg_id(b.msg_id) == (DEV, decoded.first_seq, decoded.last_seq)
        for r in decoded.rows:
            original = next(o for o in rows if o[0] == r.seq)
            if r.kind == OVERSIZED_KIND:
                assert r.payload["kind"] == "event" and r.payload["size"] > 0
            else:
                assert r.payload == json.loads(original[3])
            seen.append(r.seq)
    assert seen == [r[0] for r in rows]


def test_pack_is_deterministic_and_fills_messages() -> None:
    rows = [(i, "metrics.1m", float(i), json.dumps({"cpu": [1, 2, 3, 60]})) for i in range(1, 1441)]
    a = pack(DEV, rows, max_bytes=64 * 1024)
    assert a == pack(DEV, rows, max_bytes=64 * 1024)
    assert len(a) < 30
    assert sum(b.rows for b in a) == 1440
