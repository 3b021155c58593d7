"""The shared decoder every message family uses (reports, heartbeats, enrollment, device RPC,
the desired document): one gate for size, UTF-8, JSON, object and schema version, and one
field reader whose errors name the offending field's path (``rows[3].seq``).

Decoders are strict: wrong types, missing fields, unknown schema versions, oversized bodies and
non-JSON all raise ``MessageError``, never anything else, so a receiver can count and drop a bad
message with one ``except``. Unknown extra fields are ignored, so a newer sender can add
optional fields without breaking an older receiver.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from protocol import SCHEMA_VERSION
from protocol.errors import BAD_REQUEST, TOO_LARGE, MessageError, RemoteError
from protocol.subjects import valid_device_id

# Wall-clock timestamps a device may send: 1970 .. 2100. A device clock can be wrong (a box
# without an RTC boots in 1970), but never by centuries: 1e300 or -1e20 are garbage, and the
# hub would fail to format them as dates (OverflowError) inside its ingest transaction.
TS_MIN = 0.0
TS_MAX = 4_102_444_800.0  # 2100-01-01T00:00:00Z
INT64_MAX = 2**63 - 1  # SQLite's INTEGER; a larger Python int fails at the insert


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


def dumps(doc: Any) -> bytes:
    """Compact JSON, refusing NaN and infinities (no receiver could decode them)."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    # 1e999 parses to inf: no device sends it, and the hub could not store or serve it.
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text[:40]} is out of range")
    return v


def load(
    data: bytes | str, max_bytes: int, *, error: type[MessageError] = MessageError
) -> dict[str, Any]:
    """Size check, UTF-8, JSON, object, schema version: the first gate for every message.
    ``error`` is the ``MessageError`` family raised (``DesiredDecodeError`` for desired)."""
    if not isinstance(data, bytes | bytearray | str):
        raise error("$", "must be bytes", BAD_REQUEST)
    size = len(data.encode() if isinstance(data, str) else data)
    if size > max_bytes:
        raise error("$", f"message is {size} bytes, the limit is {max_bytes}", TOO_LARGE)
    try:
        doc = json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise error("$", f"not JSON: {exc}", BAD_REQUEST) from None
    if not isinstance(doc, dict):
        raise error("$", "must be a JSON object", BAD_REQUEST)
    v = doc.get("v")
    if v != SCHEMA_VERSION or isinstance(v, bool):
        raise error("v", f"unsupported schema version {v!r} (expected {SCHEMA_VERSION})")
    return doc


def load_reply(data: bytes | str, max_bytes: int) -> dict[str, Any]:
    """``load`` for a reply, raising ``RemoteError`` when it carries the error shape."""
    doc = load(data, max_bytes)
    err = doc.get("error")
    if err is not None:
        e = Fields(err, "error")
        raise RemoteError(
            e.str_("code", max_len=64),
            e.str_("message", max_len=4096),
            e.str_("field", required=False, max_len=256),
        )
    return doc


class Fields:
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

    def int_(self, key: str, *, required: bool = True, lo: int = 0, hi: int = INT64_MAX) -> Any:
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

    def obj(self, key: str, *, required: bool = True) -> Fields | None:
        v = self._get(key, required)
        return None if v is None else Fields(v, self.at(key))

    def list_(self, key: str, *, required: bool = True, max_len: int = 1000) -> list[Any] | None:
        v = self._get(key, required)
        if v is None:
            return None
        if not isinstance(v, list):
            raise MessageError(self.at(key), "must be a list")
        if len(v) > max_len:
            raise MessageError(self.at(key), f"must have at most {max_len} items")
        return v
