"""Pure packing of outbox rows into report messages (no I/O, property-tested).

Rows are packed in sequence order, as many per message as fit both ``max_rows`` and
``max_bytes`` of encoded JSON, each message naming the store's outbox ``epoch``. A resend
after a lost PubAck is stored again by the stream (no ``Nats-Msg-Id``: the stream's
deduplication is stream-wide, so another device could forge ours); the hub's per-device,
per-epoch ``last_applied_seq`` makes the replay harmless.

A row too large to travel even alone is replaced by an ``oversized`` marker row carrying its
original kind and size, so the sequence stays contiguous and the hub can say what was lost.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.report import (
    MAX_REPORT_BYTES,
    MAX_ROWS_PER_REPORT,
    RawRow,
    encode_report_raw,
    encode_row_raw,
    msg_id,
    report_envelope_bytes,
)
from protocol.reported import OversizedPayload, RowKind

OVERSIZED_KIND = RowKind.OVERSIZED.value


@dataclass(frozen=True)
class Batch:
    first_seq: int
    last_seq: int
    msg_id: str
    body: bytes
    rows: int
    prev_seq: int


def oversized_marker(seq: int, kind: str, ts: float, size: int) -> RawRow:
    marker: OversizedPayload = {"kind": kind, "size": size}
    return (seq, OVERSIZED_KIND, ts, json.dumps(marker))


def pack(
    device_id: str,
    rows: Sequence[RawRow],
    *,
    max_bytes: int = MAX_REPORT_BYTES,
    max_rows: int = MAX_ROWS_PER_REPORT,
    prev_seq: int = 0,
    epoch: str | None = None,
) -> list[Batch]:
    """Split ``rows`` (sorted by seq) into encoded batches within the bounds, chained by
    ``prev_seq`` (the first batch gets the one given, each next one its predecessor's last)."""
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    batches: list[Batch] = []
    current: list[RawRow] = []
    used = 0
    prev = prev_seq

    def flush() -> None:
        nonlocal current, used, prev
        if current:
            body = encode_report_raw(device_id, current, prev_seq=prev, epoch=epoch)
            first, last = current[0][0], current[-1][0]
            batches.append(
                Batch(first, last, msg_id(device_id, first, last), body, len(current), prev)
            )
            prev = last
        current, used = [], 0

    for row in rows:
        seq = row[0]
        size = len(encode_row_raw(*row).encode())
        # Alone in a batch (first = last = seq) is the largest envelope this row can get.
        if report_envelope_bytes(device_id, seq, seq, max(prev, seq - 1), epoch) + size > max_bytes:
            row = oversized_marker(seq, row[1], row[2], size)
            size = len(encode_row_raw(*row).encode())
        envelope = report_envelope_bytes(
            device_id, current[0][0] if current else seq, seq, prev, epoch
        )
        if current and (
            len(current) >= max_rows or envelope + used + size + len(current) > max_bytes
        ):
            flush()
        current.append(row)
        used += size
    flush()
    return batches
