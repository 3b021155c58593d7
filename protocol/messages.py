"""A thin re-export during the split of this module by message family (issue 15): import from
the family's own module instead. This file goes once nothing imports it.

- ``protocol.codec``: the shared decoder (``load``, ``Fields``) and ``valid_ts``/``valid_int64``
- ``protocol.errors``: ``ProtocolError`` and its families ``MessageError``, ``RemoteError``
- ``protocol.report``: report batches (``ReportBatch``, ``ReportRow``, ``decode_report``...)
- ``protocol.heartbeat``, ``protocol.enroll``, ``protocol.rpc``: the other families
- ``hub.sync.apply_plan``: the hub's ingest rule ``plan_apply``
"""

from __future__ import annotations

from protocol.codec import INT64_MAX, TS_MAX, TS_MIN, valid_int64, valid_ts
from protocol.enroll import (
    MAX_ENROLL_BYTES,
    MAX_TAG_LEN,
    MAX_TAGS,
    DeviceFacts,
    EnrollReply,
    EnrollRequest,
    decode_enroll_reply,
    decode_enroll_request,
    valid_device_password,
    validate_tags,
)
from protocol.errors import MessageError, ProtocolError, RemoteError
from protocol.heartbeat import (
    HEARTBEAT_METRICS,
    MAX_CONTAINERS,
    MAX_HEARTBEAT_BYTES,
    MAX_METRICS,
    ContainerSummary,
    Heartbeat,
    decode_heartbeat,
)
from protocol.report import (
    MAX_EPOCH_LEN,
    MAX_KIND_LEN,
    MAX_REPORT_BYTES,
    MAX_ROWS_PER_REPORT,
    MSG_ID_HEADER,
    RawRow,
    ReportBatch,
    ReportRow,
    check_msg_id,
    decode_report,
    encode_report_raw,
    encode_row_raw,
    msg_id,
    parse_msg_id,
    report_envelope_bytes,
)
from protocol.rpc import (
    DEFAULT_LOG_TAIL,
    MAX_LOG_TAIL,
    MAX_RPC_REPLY_BYTES,
    MAX_RPC_REQUEST_BYTES,
    RPC_VERBS,
    RpcReply,
    RpcRequest,
    decode_rpc_reply,
    decode_rpc_request,
    rpc_error,
    rpc_ok,
)
from protocol.subjects import (
    DESIRED_PROMPT_PREFIX,
    DESIRED_REPUBLISH_DEST,
    DESIRED_REPUBLISH_SRC,
    desired_prompt,
)

__all__ = [
    "DEFAULT_LOG_TAIL",
    "DESIRED_PROMPT_PREFIX",
    "DESIRED_REPUBLISH_DEST",
    "DESIRED_REPUBLISH_SRC",
    "HEARTBEAT_METRICS",
    "INT64_MAX",
    "MAX_CONTAINERS",
    "MAX_ENROLL_BYTES",
    "MAX_EPOCH_LEN",
    "MAX_HEARTBEAT_BYTES",
    "MAX_KIND_LEN",
    "MAX_LOG_TAIL",
    "MAX_METRICS",
    "MAX_REPORT_BYTES",
    "MAX_ROWS_PER_REPORT",
    "MAX_RPC_REPLY_BYTES",
    "MAX_RPC_REQUEST_BYTES",
    "MAX_TAGS",
    "MAX_TAG_LEN",
    "MSG_ID_HEADER",
    "RPC_VERBS",
    "TS_MAX",
    "TS_MIN",
    "ContainerSummary",
    "DeviceFacts",
    "EnrollReply",
    "EnrollRequest",
    "Heartbeat",
    "MessageError",
    "ProtocolError",
    "RawRow",
    "RemoteError",
    "ReportBatch",
    "ReportRow",
    "RpcReply",
    "RpcRequest",
    "check_msg_id",
    "decode_enroll_reply",
    "decode_enroll_request",
    "decode_heartbeat",
    "decode_report",
    "decode_rpc_reply",
    "decode_rpc_request",
    "desired_prompt",
    "encode_report_raw",
    "encode_row_raw",
    "msg_id",
    "parse_msg_id",
    "report_envelope_bytes",
    "rpc_error",
    "rpc_ok",
    "valid_device_password",
    "valid_int64",
    "valid_ts",
    "validate_tags",
]
