"""Device <-> hub message schemas: report batches, heartbeats, enrollment, device RPC.

Every message is one JSON object with a schema version field ``"v"`` (``protocol.SCHEMA_VERSION``).
Decoders are strict: wrong types, missing fields, unknown schema versions, oversized bodies and
non-JSON all raise ``MessageError`` naming the offending field (``rows[3].seq``), never anything
else, so a receiver can count and drop a bad message with one ``except``. Unknown extra fields
are ignored, so a newer sender can add optional fields without breaking an older receiver.

Subjects (see ``protocol.subjects``) and what travels on them:

- ``sb.dev.<id>.report``: ``ReportBatch`` published with JetStream into stream ``SB_REPORTS``
  (domain ``hub``), without ``Nats-Msg-Id`` (older agents sent ``<id>:<first_seq>-<last_seq>``;
  the hub still checks one that is present against the body, and relies on none of it).
- ``sb.dev.<id>.heartbeat``: ``Heartbeat``, core NATS, best effort, latest state only.
- ``sb.hub.enroll``: request ``EnrollRequest``, reply ``EnrollReply`` or the error shape.
- ``sb.dev.<id>.rpc.<verb>``: request ``RpcRequest`` body, reply ``RpcReply`` body.
- ``sb.desired.<id>``: headers-only republish of each put to the ``desired`` KV key (a prompt).

docs/sync.md is the prose version of this contract.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol import SCHEMA_VERSION
from protocol.errors import BAD_REQUEST, INVALID, TOO_LARGE
from protocol.subjects import (  # noqa: F401 - the desired prompt's names, kept importable here
    DESIRED_PROMPT_PREFIX,
    DESIRED_REPUBLISH_DEST,
    DESIRED_REPUBLISH_SRC,
    desired_prompt,
    valid_device_id,
)

# ---------------------------------------------------------------- limits and headers

MSG_ID_HEADER = "Nats-Msg-Id"
MAX_REPORT_BYTES = 256 * 1024  # one report message; the agent batches rows below this
MAX_HEARTBEAT_BYTES = 32 * 1024
MAX_ENROLL_BYTES = 16 * 1024
MAX_RPC_REQUEST_BYTES = 16 * 1024
MAX_RPC_REPLY_BYTES = 768 * 1024  # a logs tail; below NATS' default 1 MiB max_payload
MAX_ROWS_PER_REPORT = 1000
MAX_KIND_LEN = 64
MAX_TAGS = 32
MAX_TAG_LEN = 63
MAX_CONTAINERS = 128
MAX_METRICS = 64
MAX_LOG_TAIL = 5000
DEFAULT_LOG_TAIL = 100
MAX_EPOCH_LEN = 64
# Wall-clock timestamps a device may send: 1970 .. 2100. A device clock can be wrong (a box
# without an RTC boots in 1970), but never by centuries: 1e300 or -1e20 are garbage, and the
# hub would fail to format them as dates (OverflowError) inside its ingest transaction.
TS_MIN = 0.0
TS_MAX = 4_102_444_800.0  # 2100-01-01T00:00:00Z
INT64_MAX = 2**63 - 1  # SQLite's INTEGER; a larger Python int fails at the insert

RPC_VERBS: tuple[str, ...] = ("reconcile", "restart", "logs", "status")

_KIND_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # every pattern here: fullmatch
# The hub's rule for tag and group names (lower case, so `Lab` and `lab` never differ).
_TAG_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_CONTAINER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_EPOCH_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def valid_ts(v: Any) -> bool:
    """A number a device may send as a wall-clock time (``TS_MIN`` .. ``TS_MAX``)."""
    return (
        isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
        and TS_MIN <= v <= TS_MAX
    )


def valid_int64(v: Any, lo: int = 0) -> bool:
    """An integer SQLite can store (and ``lo`` or above)."""
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= INT64_MAX


class MessageError(ValueError):
    """A message failed validation. ``field`` is its path (``$`` for the whole message);
    ``code`` is a ``protocol.errors`` code (``invalid``, ``too_large`` or ``bad_request``)."""

    def __init__(self, field: str, message: str, code: str = INVALID) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.code = code


class RemoteError(Exception):
    """The other side answered with the shared error shape (``protocol.errors``)."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (field {field})" if field else ""))
        self.code = code
        self.message = message
        self.field = field


# ---------------------------------------------------------------- decoding helpers


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    # 1e999 parses to inf: no device sends it, and the hub could not store or serve it.
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text[:40]} is out of range")
    return v


def _load(data: bytes | str, max_bytes: int) -> dict[str, Any]:
    """Size check, UTF-8, JSON, object, schema version: the first gate for every message."""
    if not isinstance(data, bytes | bytearray | str):
        raise MessageError("$", "must be bytes", BAD_REQUEST)
    size = len(data.encode() if isinstance(data, str) else data)
    if size > max_bytes:
        raise MessageError("$", f"message is {size} bytes, the limit is {max_bytes}", TOO_LARGE)
    try:
        doc = json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MessageError("$", f"not JSON: {exc}", BAD_REQUEST) from None
    if not isinstance(doc, dict):
        raise MessageError("$", "must be a JSON object", BAD_REQUEST)
    v = doc.get("v")
    if v != SCHEMA_VERSION or isinstance(v, bool):
        raise MessageError("v", f"unsupported schema version {v!r} (expected {SCHEMA_VERSION})")
    return doc


class _Obj:
    """Field reader over one JSON object, prefixing every error with the object's path."""

    def __init__(self, doc: Any, path: str) -> None:
        if not isinstance(doc, dict):
            raise MessageError(path or "$", "must be an object")
        self.doc = doc
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.doc or self.doc[key] is None:
            if required:
                raise MessageError(self.at(key), "is required")
            return None
        return self.doc[key]

    def int_(self, key: str, *, required: bool = True, lo: int = 0, hi: int = 2**63 - 1) -> Any:
        v = self._get(key, required)
        if v is None:
            return None
        if not isinstance(v, int) or isinstance(v, bool):
            raise MessageError(self.at(key), "must be an integer")
        if not lo <= v <= hi:
            raise MessageError(self.at(key), f"must be between {lo} and {hi}")
        return v

    def num(self, key: str, *, required: bool = True) -> Any:
        v = self._get(key, required)
        if v is None:
            return None
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            raise MessageError(self.at(key), "must be a finite number")
        return float(v)

    def ts(self, key: str, *, required: bool = True) -> Any:
        """A wall-clock time in seconds, within ``TS_MIN`` .. ``TS_MAX``."""
        v = self.num(key, required=required)
        if v is not None and not TS_MIN <= v <= TS_MAX:
            raise MessageError(
                self.at(key), f"must be a time between {TS_MIN:.0f} and {TS_MAX:.0f} (1970-2100)"
            )
        return v

    def str_(
        self,
        key: str,
        *,
        required: bool = True,
        max_len: int = 256,
        pattern: re.Pattern[str] | None = None,
        what: str = "",
    ) -> Any:
        v = self._get(key, required)
        if v is None:
            return None
        if not isinstance(v, str) or not v:
            raise MessageError(self.at(key), "must be a non-empty string")
        if len(v) > max_len:
            raise MessageError(self.at(key), f"must be at most {max_len} characters")
        if pattern is not None and not pattern.fullmatch(v):
            raise MessageError(self.at(key), f"must be {what or 'well formed'}")
        return v

    def device_id(self, key: str = "device_id") -> str:
        v = self.str_(key, max_len=63)
        if not valid_device_id(v):
            raise MessageError(
                self.at(key),
                "must be 1-63 characters of a-z, 0-9 and '-', alphanumeric at both ends",
            )
        return str(v)

    def obj(self, key: str, *, required: bool = True) -> _Obj | None:
        v = self._get(key, required)
        return None if v is None else _Obj(v, self.at(key))

    def list_(self, key: str, *, required: bool = True, max_len: int = 1000) -> list[Any] | None:
        v = self._get(key, required)
        if v is None:
            return None
        if not isinstance(v, list):
            raise MessageError(self.at(key), "must be a list")
        if len(v) > max_len:
            raise MessageError(self.at(key), f"must have at most {max_len} items")
        return v


# ---------------------------------------------------------------- report batches


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
    doc = _Obj(_load(data, MAX_REPORT_BYTES), "")
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
        r = _Obj(raw, f"rows[{i}]")
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


@dataclass(frozen=True)
class ApplyPlan:
    """What the hub's ingest does with one report batch (see ``plan_apply``).

    ``wait``: an earlier batch has not been applied yet (this one overtook it): NAK with a short
    delay, apply nothing. ``too_far``: the batch's sequences jump beyond ``max_seq``, what the
    device can have numbered: apply nothing (the caller waits a while for evidence, then
    refuses it). Otherwise apply ``rows`` in order (those above ``last_applied``), in
    one transaction that also sets the device's last applied seq to ``last_applied``; ``gaps``
    are missing ``(first, last)`` ranges before them (announced by ``outbox.dropped`` events
    when the device dropped rows; otherwise a loss worth logging), ``replayed`` counts rows
    already applied (a resend) and skipped.
    """

    wait: bool
    rows: tuple[ReportRow, ...] = ()
    last_applied: int = 0
    gaps: tuple[tuple[int, int], ...] = ()
    replayed: int = 0
    too_far: bool = False


def plan_apply(
    batch: ReportBatch, last_applied: int, *, force: bool = False, max_seq: int | None = None
) -> ApplyPlan:
    """The ingest rule, pure: exactly once and in order per device.

    ``force`` applies a batch that would wait (after the consumer's redelivery limit, e.g. a
    hub whose state was reset), reporting the skipped range as a gap. ``max_seq`` is the
    highest sequence the device can have used: a batch reaching beyond it is never adopted
    (its position would make every later real row look like a replay).
    """
    if batch.prev_seq > last_applied and not force:
        return ApplyPlan(wait=True, last_applied=last_applied)
    if max_seq is not None and batch.last_seq > max(max_seq, last_applied):
        return ApplyPlan(wait=False, last_applied=last_applied, too_far=True)
    fresh = tuple(r for r in batch.rows if r.seq > last_applied)
    gaps: list[tuple[int, int]] = []
    expect = last_applied + 1
    for r in fresh:
        if r.seq > expect:
            gaps.append((expect, r.seq - 1))
        expect = r.seq + 1
    return ApplyPlan(
        wait=False,
        rows=fresh,
        last_applied=max(last_applied, batch.last_seq),
        gaps=tuple(gaps),
        replayed=len(batch.rows) - len(fresh),
    )


# ---------------------------------------------------------------- heartbeat


@dataclass(frozen=True)
class ContainerSummary:
    name: str
    state: str  # engine state: running, exited, created, restarting, paused...
    health: str | None = None  # healthy, unhealthy, starting, or None without a check

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "health": self.health}


@dataclass(frozen=True)
class Heartbeat:
    """Latest state only; never queued, sent every 30 s, so it is kept small (it is most of an
    idle device's upstream bytes): container counts plus only the containers that are not
    running-and-healthy, and a short host summary (``HEARTBEAT_METRICS``); full metrics travel
    as 1-minute rollups through the outbox. ``last_seq`` is the device's newest outbox
    sequence and ``outbox_pending`` its unsent rows, so the hub can show how far behind its
    copy is. Omitted fields take their defaults.
    """

    device_id: str
    ts: float
    agent_version: str
    bundle_ref: str | None = None  # "name@version" running now, None for none
    generation: int | None = None  # desired generation the device is running
    containers_total: int = 0
    containers_running: int = 0
    containers_unhealthy: int = 0
    containers: tuple[ContainerSummary, ...] = ()  # only the ones needing attention
    metrics: Mapping[str, float] = field(default_factory=dict)
    last_seq: int = 0
    outbox_pending: int = 0

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "device_id": self.device_id,
            "ts": self.ts,
            "agent_version": self.agent_version,
            "bundle_ref": self.bundle_ref,
            "generation": self.generation,
            "containers_total": self.containers_total,
            "containers_running": self.containers_running,
            "containers_unhealthy": self.containers_unhealthy,
            "containers": [c.to_dict() for c in self.containers],
            "metrics": dict(self.metrics),
            "last_seq": self.last_seq,
            "outbox_pending": self.outbox_pending,
        }
        return _dumps({k: v for k, v in doc.items() if v is not None and v != []})


HEARTBEAT_METRICS: tuple[str, ...] = (
    "cpu.percent",
    "mem.percent",
    "disk.percent",
    "load.1",
    "temp.celsius",
)


def decode_heartbeat(data: bytes | str, *, subject_device: str | None = None) -> Heartbeat:
    doc = _Obj(_load(data, MAX_HEARTBEAT_BYTES), "")
    device_id = doc.device_id()
    if subject_device is not None and device_id != subject_device:
        raise MessageError("device_id", f"{device_id!r} does not match the subject's device")
    containers = []
    for i, raw in enumerate(doc.list_("containers", required=False, max_len=MAX_CONTAINERS) or []):
        c = _Obj(raw, f"containers[{i}]")
        containers.append(
            ContainerSummary(
                c.str_("name", max_len=128),
                c.str_("state", max_len=32),
                c.str_("health", required=False, max_len=32),
            )
        )
    metrics_obj = doc.obj("metrics", required=False)
    metrics: dict[str, float] = {}
    if metrics_obj is not None:
        if len(metrics_obj.doc) > MAX_METRICS:
            raise MessageError("metrics", f"must have at most {MAX_METRICS} entries")
        for k in metrics_obj.doc:
            if not isinstance(k, str) or not k or len(k) > MAX_KIND_LEN:
                raise MessageError("metrics", f"metric name {k!r} must be 1-{MAX_KIND_LEN} chars")
            metrics[k] = metrics_obj.num(k)
    return Heartbeat(
        device_id=device_id,
        ts=doc.ts("ts"),
        agent_version=doc.str_("agent_version", max_len=64),
        bundle_ref=doc.str_("bundle_ref", required=False, max_len=256),
        generation=doc.int_("generation", required=False),
        containers_total=doc.int_("containers_total", required=False) or 0,
        containers_running=doc.int_("containers_running", required=False) or 0,
        containers_unhealthy=doc.int_("containers_unhealthy", required=False) or 0,
        containers=tuple(containers),
        metrics=metrics,
        last_seq=doc.int_("last_seq", required=False) or 0,
        outbox_pending=doc.int_("outbox_pending", required=False) or 0,
    )


# ---------------------------------------------------------------- enrollment


@dataclass(frozen=True)
class DeviceFacts:
    hostname: str
    arch: str
    os: str
    engine: str  # "docker", "podman" or "unknown"
    agent_version: str

    def to_dict(self) -> dict[str, str]:
        return {
            "hostname": self.hostname,
            "arch": self.arch,
            "os": self.os,
            "engine": self.engine,
            "agent_version": self.agent_version,
        }


# The device's own NATS password, made by the enrolling device and sent in the request (only
# the hub can read ``sb.hub.enroll``), so the reply, which every enrolling device's shared
# bootstrap login can see, carries no secret. URL-safe (it goes in the leaf URL) and at most
# 72 bytes (bcrypt reads no further); at least 32 characters (>= 192 random bits as the agent
# makes it: ``secrets.token_urlsafe(32)``, 43 characters).
_DEVICE_PASSWORD_RE = re.compile(r"[A-Za-z0-9_-]{32,72}")


def valid_device_password(password: object) -> bool:
    return isinstance(password, str) and _DEVICE_PASSWORD_RE.fullmatch(password) is not None


@dataclass(frozen=True)
class EnrollRequest:
    token: str = field(repr=False)
    device_id: str
    facts: DeviceFacts
    tags: tuple[str, ...] = ()
    # Required by the hub since issue 19; "" only to decode an older agent's request, which
    # the hub then refuses with a message naming the fix.
    nats_password: str = field(default="", repr=False)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "token": self.token,
            "device_id": self.device_id,
            "facts": self.facts.to_dict(),
            "tags": list(self.tags),
        }
        if self.nats_password:
            doc["nats_password"] = self.nats_password
        return _dumps(doc)


def _tags(doc: _Obj) -> tuple[str, ...]:
    out = []
    for i, t in enumerate(doc.list_("tags", required=False, max_len=MAX_TAGS) or []):
        if not isinstance(t, str) or not _TAG_RE.fullmatch(t):
            raise MessageError(
                f"tags[{i}]",
                f"must be 1-{MAX_TAG_LEN} characters of a-z 0-9 . _ - (starting with a-z or 0-9)",
            )
        out.append(t)
    return tuple(out)


def validate_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Tags as the enrollment request carries them (for CLI input), or ``MessageError``."""
    return _tags(_Obj({"tags": list(tags)}, ""))


def decode_enroll_request(data: bytes | str) -> EnrollRequest:
    doc = _Obj(_load(data, MAX_ENROLL_BYTES), "")
    facts = doc.obj("facts")
    assert facts is not None
    return EnrollRequest(
        token=doc.str_("token", max_len=512),
        device_id=doc.device_id(),
        facts=DeviceFacts(
            hostname=facts.str_("hostname", max_len=255),
            arch=facts.str_("arch", max_len=64),
            os=facts.str_("os", max_len=255),
            engine=facts.str_("engine", max_len=32),
            agent_version=facts.str_("agent_version", max_len=64),
        ),
        tags=_tags(doc),
        nats_password=doc.str_(
            "nats_password",
            required=False,
            max_len=72,
            pattern=_DEVICE_PASSWORD_RE,
            what="32-72 characters of A-Z a-z 0-9 _ - (the device's new NATS password)",
        )
        or "",
    )


@dataclass(frozen=True)
class EnrollReply:
    """The device's own NATS credentials and where its leaf links to.

    ``leaf_url`` is the hub's leafnode URL (``nats-leaf://host:port``) for the device's leaf
    server; ``hub_url`` the client URL for a device configured without a leaf.
    ``nats_password`` is never in the hub's reply (the device made it and sent it); it is in
    the device's credentials file, which holds the same document with it filled in.
    """

    device_id: str
    nats_user: str
    nats_password: str = field(repr=False)
    leaf_url: str
    hub_url: str | None = None
    js_domain: str = "hub"

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "device_id": self.device_id,
            "nats_user": self.nats_user,
            "leaf_url": self.leaf_url,
            "hub_url": self.hub_url,
            "js_domain": self.js_domain,
        }
        if self.nats_password:
            doc["nats_password"] = self.nats_password
        return _dumps(doc)


def decode_enroll_reply(data: bytes | str) -> EnrollReply:
    """An ``EnrollReply``, or ``RemoteError`` when the hub answered with the error shape."""
    doc = _Obj(_load_reply(data, MAX_ENROLL_BYTES), "")
    leaf_url = doc.str_("leaf_url", max_len=512)
    if not leaf_url.startswith(("nats-leaf://", "nats://", "tls://", "ws://", "wss://")):
        raise MessageError("leaf_url", "must be a nats-leaf://, nats://, tls:// or ws(s):// URL")
    hub_url = doc.str_("hub_url", required=False, max_len=512)
    return EnrollReply(
        device_id=doc.device_id(),
        nats_user=doc.str_("nats_user", max_len=128),
        nats_password=doc.str_("nats_password", required=False, max_len=512) or "",
        leaf_url=leaf_url,
        hub_url=hub_url,
        js_domain=doc.str_("js_domain", required=False, max_len=64) or "hub",
    )


# ---------------------------------------------------------------- device RPC


@dataclass(frozen=True)
class RpcRequest:
    """``verb`` comes from the subject ``sb.dev.<id>.rpc.<verb>``; ``args`` from the body.

    Arguments per verb: ``reconcile`` none; ``restart`` ``{container}``; ``logs``
    ``{container, tail}`` (tail 1..5000, default 100); ``status`` none.
    """

    verb: str
    container: str | None = None
    tail: int | None = None

    def to_json(self) -> bytes:
        args: dict[str, Any] = {}
        if self.container is not None:
            args["container"] = self.container
        if self.tail is not None:
            args["tail"] = self.tail
        return _dumps({"v": SCHEMA_VERSION, "args": args})


def decode_rpc_request(verb: str, data: bytes | str) -> RpcRequest:
    if verb not in RPC_VERBS:
        raise MessageError("verb", f"unknown verb {verb!r}; known: {', '.join(RPC_VERBS)}")
    doc = _Obj(_load(data, MAX_RPC_REQUEST_BYTES), "")
    args = doc.obj("args", required=False) or _Obj({}, "args")
    container = tail = None
    if verb in ("restart", "logs"):
        container = args.str_(
            "container", max_len=128, pattern=_CONTAINER_RE, what="a container name"
        )
    if verb == "logs":
        tail = args.int_("tail", required=False, lo=1, hi=MAX_LOG_TAIL) or DEFAULT_LOG_TAIL
    return RpcRequest(verb, container, tail)


@dataclass(frozen=True)
class RpcReply:
    """Either ``result`` (an object) or ``error`` (``{code, message, field?}``)."""

    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def raise_for_error(self) -> dict[str, Any]:
        if self.error is not None:
            raise RemoteError(
                str(self.error.get("code")), str(self.error.get("message")), self.error.get("field")
            )
        return self.result or {}

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {"v": SCHEMA_VERSION}
        if self.error is not None:
            doc["error"] = self.error
        else:
            doc["result"] = self.result or {}
        body = _dumps(doc)
        if len(body) > MAX_RPC_REPLY_BYTES:
            return rpc_error(TOO_LARGE, f"reply is {len(body)} bytes, limit {MAX_RPC_REPLY_BYTES}")
        return body


def rpc_ok(result: dict[str, Any]) -> bytes:
    return RpcReply(result=result).to_json()


def rpc_error(code: str, message: str, field: str | None = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        err["field"] = field
    return _dumps({"v": SCHEMA_VERSION, "error": err})


def _load_reply(data: bytes | str, max_bytes: int) -> dict[str, Any]:
    doc = _load(data, max_bytes)
    err = doc.get("error")
    if err is not None:
        e = _Obj(err, "error")
        raise RemoteError(
            e.str_("code", max_len=64),
            e.str_("message", max_len=4096),
            e.str_("field", required=False, max_len=256),
        )
    return doc


def decode_rpc_reply(data: bytes | str) -> RpcReply:
    doc = _Obj(_load(data, MAX_RPC_REPLY_BYTES), "")
    err = doc.obj("error", required=False)
    if err is not None:
        return RpcReply(
            error={
                "code": err.str_("code", max_len=64),
                "message": err.str_("message", max_len=4096),
                **({"field": f} if (f := err.str_("field", required=False)) else {}),
            }
        )
    result = doc.obj("result")
    assert result is not None
    return RpcReply(result=result.doc)
