"""The message families (protocol.report, .heartbeat, .enroll, .rpc over protocol.codec):
round trips, strict decoding naming the field, any bytes -> MessageError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.codec import TS_MAX, valid_int64, valid_ts
from protocol.enroll import (
    DeviceFacts,
    EnrollReply,
    EnrollRequest,
    decode_enroll_reply,
    decode_enroll_request,
    validate_tags,
)
from protocol.errors import TOO_LARGE, MessageError, RemoteError
from protocol.heartbeat import ContainerSummary, Heartbeat, decode_heartbeat
from protocol.report import (
    MAX_REPORT_BYTES,
    ReportBatch,
    ReportRow,
    check_msg_id,
    decode_report,
    parse_msg_id,
)
from protocol.rpc import (
    RpcReply,
    RpcRequest,
    decode_rpc_reply,
    decode_rpc_request,
    rpc_error,
    rpc_ok,
)

DEV = "dev-1"
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
device_ids = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")
kinds = st.sampled_from(["event", "metrics.1m", "observed", "desired", "deployment"])
finite = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)


def _report(**over: Any) -> bytes:
    doc: dict[str, Any] = {
        "v": 1,
        "device_id": DEV,
        "first_seq": 1,
        "last_seq": 2,
        "rows": [
            {"seq": 1, "kind": "event", "ts": 1.5, "payload": {"a": 1}},
            {"seq": 2, "kind": "metrics.1m", "ts": 2.0, "payload": None},
        ],
    }
    doc.update(over)
    return json.dumps(doc).encode()


@given(
    device_ids,
    st.lists(st.tuples(kinds, finite, json_values), min_size=1, max_size=20),
    st.integers(1, 10**12),
)
def test_report_round_trip(dev: str, rows: list[tuple[str, float, Any]], start: int) -> None:
    batch = ReportBatch(
        dev,
        tuple(ReportRow(start + i * 2, k, ts, p) for i, (k, ts, p) in enumerate(rows)),
        prev_seq=start - 1,
    )
    back = decode_report(batch.to_json(), subject_device=dev)
    assert back == batch
    check_msg_id(back, batch.msg_id)
    assert parse_msg_id(batch.msg_id) == (dev, batch.first_seq, batch.last_seq)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"v": 2}, "v"),
        ({"v": True}, "v"),
        ({"device_id": "Bad_Id"}, "device_id"),
        ({"first_seq": 0}, "first_seq"),
        ({"prev_seq": 1}, "prev_seq"),
        ({"prev_seq": -1}, "prev_seq"),
        ({"first_seq": 5}, "first_seq"),
        ({"last_seq": 9}, "last_seq"),
        ({"rows": []}, "rows"),
        ({"rows": "x"}, "rows"),
        ({"rows": [{"seq": 1, "kind": "event", "ts": 1}]}, "rows[0].payload"),
        ({"rows": [{"seq": "1", "kind": "event", "ts": 1, "payload": 1}]}, "rows[0].seq"),
        ({"rows": [{"seq": 1, "kind": "Event!", "ts": 1, "payload": 1}]}, "rows[0].kind"),
        ({"rows": [{"seq": 1, "kind": "event", "ts": "x", "payload": 1}]}, "rows[0].ts"),
        (
            {
                "rows": [
                    {"seq": 1, "kind": "event", "ts": 1, "payload": 1},
                    {"seq": 1, "kind": "event", "ts": 1, "payload": 1},
                ]
            },
            "rows[1].seq",
        ),
    ],
)
def test_report_errors_name_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(MessageError) as exc:
        decode_report(_report(**over))
    assert exc.value.field == field


def test_report_forged_device_refused() -> None:
    with pytest.raises(MessageError) as exc:
        decode_report(_report(), subject_device="dev-2")
    assert exc.value.field == "device_id"


def test_report_oversized_refused() -> None:
    big = _report(rows=[{"seq": 1, "kind": "event", "ts": 1, "payload": "x" * MAX_REPORT_BYTES}])
    with pytest.raises(MessageError) as exc:
        decode_report(big)
    assert exc.value.code == TOO_LARGE


def test_msg_id_mismatch_and_garbage() -> None:
    batch = decode_report(_report())
    with pytest.raises(MessageError):
        check_msg_id(batch, "dev-1:1-3")
    # Another device's id on this device's batch: an attempt to poison its deduplication.
    with pytest.raises(MessageError):
        check_msg_id(batch, "dev-2:1-2")
    check_msg_id(batch, None)  # agents no longer send one
    for bad in ("", "dev-1", "dev-1:1", "dev-1:a-b", "BAD:1-2"):
        with pytest.raises(MessageError):
            parse_msg_id(bad)


DECODERS = [
    decode_report,
    decode_heartbeat,
    decode_enroll_request,
    decode_enroll_reply,
    lambda d: decode_rpc_request("logs", d),
    decode_rpc_reply,
]


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_clean_error(data: bytes) -> None:
    for decode in DECODERS:
        try:
            decode(data)
        except (MessageError, RemoteError):
            pass


@settings(max_examples=300)
@given(json_values)
def test_any_json_gives_a_clean_error(doc: Any) -> None:
    data = json.dumps(doc).encode()
    versioned = json.dumps({"v": 1, **doc}).encode() if isinstance(doc, dict) else data
    for decode in DECODERS:
        for d in (data, versioned):
            try:
                decode(d)
            except (MessageError, RemoteError):
                pass


def test_deep_nesting_is_a_clean_error() -> None:
    with pytest.raises(MessageError):
        decode_report(b"[" * 100_000)


@given(
    device_ids,
    finite,
    st.lists(
        st.tuples(st.text(min_size=1, max_size=10), st.sampled_from(["running", "exited"])),
        max_size=5,
    ),
    st.dictionaries(st.text(min_size=1, max_size=10), finite, max_size=5),
)
def test_heartbeat_round_trip(
    dev: str, ts: float, containers: list[tuple[str, str]], metrics: dict[str, float]
) -> None:
    hb = Heartbeat(
        dev,
        ts,
        "0.1.0",
        "app@1.0.0",
        3,
        containers_total=len(containers) + 1,
        containers_running=len(containers),
        containers_unhealthy=0,
        containers=tuple(ContainerSummary(n, s, None) for n, s in containers),
        metrics=metrics,
        last_seq=10,
        outbox_pending=2,
    )
    assert decode_heartbeat(hb.to_json(), subject_device=dev) == hb


def test_heartbeat_errors() -> None:
    hb = json.loads(Heartbeat(DEV, 1.0, "0.1").to_json())
    hb["metrics"] = {"cpu": "high"}
    with pytest.raises(MessageError) as exc:
        decode_heartbeat(json.dumps(hb))
    assert exc.value.field == "metrics.cpu"
    with pytest.raises(MessageError) as exc:
        decode_heartbeat(Heartbeat(DEV, 1.0, "0.1").to_json(), subject_device="x")
    assert exc.value.field == "device_id"


def test_enroll_round_trip_and_errors() -> None:
    facts = DeviceFacts("box", "x86_64", "Debian 12", "podman", "0.1.0")
    req = EnrollRequest("tok", DEV, facts, ("lab", "rpi"))
    assert decode_enroll_request(req.to_json()) == req
    assert "tok" not in repr(req)
    doc = json.loads(req.to_json())
    doc["facts"]["arch"] = 5
    with pytest.raises(MessageError) as exc:
        decode_enroll_request(json.dumps(doc))
    assert exc.value.field == "facts.arch"
    doc = json.loads(req.to_json())
    doc["tags"] = ["ok", "not ok"]
    with pytest.raises(MessageError) as exc:
        decode_enroll_request(json.dumps(doc))
    assert exc.value.field == "tags[1]"

    reply = EnrollReply(DEV, "dev-dev-1", "pw", "nats-leaf://hub:7422", "nats://hub:4222")
    assert decode_enroll_reply(reply.to_json()) == reply
    assert "pw" not in repr(reply)
    with pytest.raises(RemoteError) as rexc:
        decode_enroll_reply(rpc_error("forbidden", "token expired"))
    assert rexc.value.code == "forbidden"


def test_rpc_requests_per_verb() -> None:
    assert decode_rpc_request("status", b'{"v":1}') == RpcRequest("status")
    req = RpcRequest("logs", "web", 20)
    assert decode_rpc_request("logs", req.to_json()) == req
    assert decode_rpc_request("logs", RpcRequest("logs", "web").to_json()).tail == 100
    for verb, body, field in [
        ("nope", b'{"v":1}', "verb"),
        ("restart", b'{"v":1}', "args.container"),
        ("restart", b'{"v":1,"args":{"container":"../x"}}', "args.container"),
        ("logs", b'{"v":1,"args":{"container":"web","tail":0}}', "args.tail"),
        ("logs", b'{"v":1,"args":[]}', "args"),
    ]:
        with pytest.raises(MessageError) as exc:
            decode_rpc_request(verb, body)
        assert exc.value.field == field


def test_rpc_replies() -> None:
    ok = decode_rpc_reply(rpc_ok({"lines": ["a"]}))
    assert ok.ok and ok.raise_for_error() == {"lines": ["a"]}
    err = decode_rpc_reply(rpc_error("not_found", "no container web", "args.container"))
    assert not err.ok
    with pytest.raises(RemoteError) as exc:
        err.raise_for_error()
    assert exc.value.field == "args.container"
    huge = RpcReply(result={"lines": ["x" * 1000] * 1000}).to_json()
    assert decode_rpc_reply(huge).error is not None


def test_validate_tags() -> None:
    assert validate_tags(["a", "rpi-4", "site_2.x"]) == ("a", "rpi-4", "site_2.x")
    for bad in ("b:c", "Lab", "-x"):  # the hub's name rule: lower case, no ':'
        with pytest.raises(MessageError):
            validate_tags([bad])
    with pytest.raises(MessageError):
        validate_tags(["a b"])


@given(
    device_ids,
    st.lists(st.tuples(kinds, finite, json_values), min_size=1, max_size=5),
    st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z") | st.none(),
)
def test_report_epoch_round_trips_and_old_reports_have_none(
    dev: str, rows: list[tuple[str, float, Any]], epoch: str | None
) -> None:
    batch = ReportBatch(
        dev, tuple(ReportRow(1 + i, k, ts, p) for i, (k, ts, p) in enumerate(rows)), 0, epoch
    )
    assert decode_report(batch.to_json(), subject_device=dev) == batch
    assert decode_report(_report()).epoch is None
    for bad in ("", "a" * 65, "no spaces", "dots.no", 7):
        with pytest.raises(MessageError) as exc:
            decode_report(_report(epoch=bad))
        assert exc.value.field == "epoch"


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"ts": 1e300}, "rows[0].ts"),
        ({"ts": -1e20}, "rows[0].ts"),
        ({"ts": -0.5}, "rows[0].ts"),
        ({"ts": TS_MAX + 1}, "rows[0].ts"),
        ({"seq": 10**30}, "rows[0].seq"),
        ({"seq": 2**63}, "rows[0].seq"),
    ],
)
def test_report_values_out_of_range_are_refused_at_decode(row: dict[str, Any], field: str) -> None:
    """What overflowed later in the hub's transaction (year 33658, ints SQLite cannot hold)
    is refused where it is decoded, naming the field."""
    r = {"seq": 1, "kind": "event", "ts": 1.5, "payload": {}} | row
    with pytest.raises(MessageError) as exc:
        decode_report(_report(rows=[r], first_seq=r["seq"], last_seq=r["seq"]))
    assert exc.value.field in (field, "first_seq")


@pytest.mark.parametrize("text", [b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_numbers_anywhere_are_not_json(text: bytes) -> None:
    body = _report().replace(b'{"a": 1}', b'{"a": ' + text + b"}")
    assert text in body
    with pytest.raises(MessageError) as exc:
        decode_report(body)
    assert exc.value.code == "bad_request"


def test_heartbeat_time_is_range_checked() -> None:
    ok = Heartbeat("dev-1", 0.0, "0.1")
    assert decode_heartbeat(ok.to_json()).ts == 0.0
    for ts in (1e300, -1e20, TS_MAX * 2):
        with pytest.raises(MessageError) as exc:
            decode_heartbeat(Heartbeat("dev-1", ts, "0.1").to_json())
        assert exc.value.field == "ts"


def test_valid_ts_and_int64() -> None:
    assert valid_ts(0) and valid_ts(1.7e9) and valid_ts(TS_MAX)
    assert not any(valid_ts(v) for v in (-1, 1e300, float("nan"), True, "1", None))
    assert valid_int64(0) and valid_int64(2**63 - 1)
    assert not any(valid_int64(v) for v in (-1, 2**63, 10**30, 1.0, True, None))


def test_one_exception_root() -> None:
    """Every error the protocol raises is a ProtocolError: one ``except`` catches them all."""
    from protocol.desired import DesiredState
    from protocol.errors import DesiredDecodeError, ProtocolError

    caught: list[ProtocolError] = []
    for bad in (
        lambda: decode_report(b"nope"),
        lambda: decode_heartbeat(b"{}"),
        lambda: decode_enroll_reply(rpc_error("forbidden", "no")),
        lambda: decode_rpc_request("dance", b"{}"),
        lambda: DesiredState.from_json(b"[]"),
    ):
        with pytest.raises(ProtocolError) as exc:
            bad()
        caught.append(exc.value)
    assert [type(e) for e in caught] == [
        MessageError,
        MessageError,
        RemoteError,
        MessageError,
        DesiredDecodeError,
    ]
    assert isinstance(caught[-1], MessageError) and isinstance(caught[0], ValueError)
