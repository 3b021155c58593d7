"""Report batches: the outbox rows a device sends upstream, and their one encoding.

``sb.dev.<id>.report`` carries a ``ReportBatch``, published with JetStream into stream
``SB_REPORTS`` (domain ``hub``), without ``Nats-Msg-Id`` (older agents sent
``<id>:<first_seq>-<last_seq>``; the hub still checks one that is present against the body, and
relies on none of it). Each row's ``kind`` is a ``protocol.reported.RowKind``; what its payload
holds is described there. docs/sync.md is the prose version of this contract.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocol import SCHEMA_VERSION
from protocol.codec import Fields, load
from protocol.errors import MessageError
from protocol.subjects import valid_device_id

MSG_ID_HEADER = "Nats-Msg-Id"
MAX_REPORT_BYTES = 256 * 1024  # one report message; the agent batches rows below this
MAX_ROWS_PER_REPORT = 1000
MAX_KIND_LEN = 64
MAX_EPOCH_LEN = 64

_KIND_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # every pattern here: fullmatch
_EPOCH_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def msg_id(device_id: str, first_seq: int, last_seq: int) -> str:
    """``<device>:<first_seq>-<last_seq>``: the ``Nats-Msg-Id`` older agents sent with a batch.

    Agents no longer send it: JetStream deduplicates on it across the whole stream, so any
    device could publish, on its own subject, another device's next ids and make the stream
    answer "duplicate" to that device's real batches (which an older agent counted as
    delivered). Replays are the hub's job, by per-device sequence (``plan_apply``)."""
    return f"{device_id}:{first_seq}-{last_seq}"


def parse_msg_id(value: str) -> tuple[str, int, int]:
    dev, sep, rng = value.partition(":")
    first, dash, last = rng.partition("-")
    if not sep or not dash or not valid_device_id(dev) or not first.isdigit() or not last.isdigit():
        raise MessageError(MSG_ID_HEADER, f"must be '<device>:<first>-<last>', got {value!r}")
    return dev, int(first), int(last)


@dataclass(frozen=True)
class ReportRow:
    """One outbox row: ``seq`` is the device's outbox sequence, ``ts`` wall-clock seconds
    when it was recorded, ``kind`` names the payload type (``event``, ``metrics.1m``,
    ``observed``, ``desired``, ``deployment``...)."""

    seq: int
    kind: str
    ts: float
    payload: Any

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "ts": self.ts, "payload": self.payload}


@dataclass(frozen=True)
class ReportBatch:
    """Rows in strictly increasing ``seq`` order (gaps allowed: rows the device dropped when
    offline too long, announced by an ``outbox.dropped`` event).

    ``prev_seq`` is the seq of the row the device sent just before this batch's first row in
    this agent session (0 = no ordering claim). A batch can reach the stream ahead of an
    earlier one (the earlier publish failed while the link came up between the two), so the
    hub applies a batch only once ``prev_seq <= last_applied_seq`` and otherwise NAKs it
    with a short delay: the earlier rows are on their way, resent by the device.

    ``epoch`` names the device's store (its outbox numbering): a store made again (the
    agent's database deleted or emptied) has a new epoch and numbers from 1, which the hub
    must apply as new rows, not drop as replays. None: an older agent (one numbering only).
    """

    device_id: str
    rows: tuple[ReportRow, ...]
    prev_seq: int = 0
    epoch: str | None = None

    @property
    def first_seq(self) -> int:
        return self.rows[0].seq

    @property
    def last_seq(self) -> int:
        return self.rows[-1].seq

    @property
    def msg_id(self) -> str:
        return msg_id(self.device_id, self.first_seq, self.last_seq)

    def to_json(self) -> bytes:
        return encode_report_raw(
            self.device_id,
            [
                (r.seq, r.kind, r.ts, json.dumps(r.payload, separators=(",", ":")))
                for r in self.rows
            ],
            prev_seq=self.prev_seq,
            epoch=self.epoch,
        )


RawRow = tuple[int, str, float, str]
"""``(seq, kind, ts, payload_json)``: a row whose payload is already JSON text (the store's
own column), embedded as-is so the agent never re-parses what it wrote."""


def encode_row_raw(seq: int, kind: str, ts: float, payload_json: str) -> str:
    return f'{{"seq":{seq},"kind":{json.dumps(kind)},"ts":{ts!r},"payload":{payload_json}}}'


def report_envelope_bytes(
    device_id: str, first_seq: int, last_seq: int, prev_seq: int, epoch: str | None = None
) -> int:
    """Bytes of a batch without its rows (and the commas between them)."""
    return len(
        encode_report_raw(
            device_id, [], prev_seq=prev_seq, first_seq=first_seq, last_seq=last_seq, epoch=epoch
        )
    )


def encode_report_raw(
    device_id: str,
    rows: Sequence[RawRow],
    *,
    prev_seq: int = 0,
    first_seq: int | None = None,
    last_seq: int | None = None,
    epoch: str | None = None,
) -> bytes:
    """Build the report JSON from raw rows (fast path; the layout ``decode_report`` reads)."""
    first = rows[0][0] if rows else (first_seq or 0)
    last = rows[-1][0] if rows else (last_seq or 0)
    body = ",".join(encode_row_raw(*r) for r in rows)
    ep = "" if epoch is None else f'"epoch":{json.dumps(epoch)},'
    return (
        f'{{"v":{SCHEMA_VERSION},"device_id":{json.dumps(device_id)},{ep}"prev_seq":{prev_seq},'
        f'"first_seq":{first},"last_seq":{last},"rows":[{body}]}}'
    ).encode()


def decode_report(data: bytes | str, *, subject_device: str | None = None) -> ReportBatch:
    """Validate a report message. With ``subject_device`` (the id in ``sb.dev.<id>.report``)
    a body naming another device is refused: one device can never report as another.
    Sequences are within SQLite's integer range and row times within ``TS_MIN..TS_MAX``."""
    doc = Fields(load(data, MAX_REPORT_BYTES), "")
    device_id = doc.device_id()
    if subject_device is not None and device_id != subject_device:
        raise MessageError("device_id", f"{device_id!r} does not match the subject's device")
    epoch = doc.str_("epoch", required=False, max_len=MAX_EPOCH_LEN)
    if epoch is not None and not _EPOCH_RE.fullmatch(epoch):
        raise MessageError("epoch", "must be 1-64 characters of A-Z a-z 0-9 _ -")
    prev = doc.int_("prev_seq", required=False) or 0
    first = doc.int_("first_seq", lo=1)
    last = doc.int_("last_seq", lo=1)
    if prev >= first:
        raise MessageError("prev_seq", "must be less than first_seq")
    raw_rows = doc.list_("rows", max_len=MAX_ROWS_PER_REPORT)
    assert raw_rows is not None
    if not raw_rows:
        raise MessageError("rows", "must not be empty")
    rows: list[ReportRow] = []
    prev_row = 0
    for i, raw in enumerate(raw_rows):
        r = Fields(raw, f"rows[{i}]")
        seq = r.int_("seq", lo=1)
        if seq <= prev_row:
            raise MessageError(r.at("seq"), "sequence numbers must strictly increase")
        prev_row = seq
        kind = r.str_("kind", max_len=MAX_KIND_LEN, pattern=_KIND_RE, what="a lowercase kind name")
        ts = r.ts("ts")
        if "payload" not in r.doc:
            raise MessageError(r.at("payload"), "is required")
        rows.append(ReportRow(seq, kind, ts, r.doc["payload"]))
    if rows[0].seq != first:
        raise MessageError("first_seq", "must equal the first row's seq")
    if rows[-1].seq != last:
        raise MessageError("last_seq", "must equal the last row's seq")
    return ReportBatch(device_id, tuple(rows), prev, epoch)


def check_msg_id(batch: ReportBatch, header_value: str | None) -> None:
    """The hub's cross-check of a ``Nats-Msg-Id`` header against the body. Optional (agents
    no longer send one); when present it must name this batch, of this subject's device:
    an id naming another device is an attempt to poison that device's deduplication."""
    if header_value is None:
        return
    if parse_msg_id(header_value) != (batch.device_id, batch.first_seq, batch.last_seq):
        raise MessageError(MSG_ID_HEADER, f"{header_value!r} does not match the batch")
