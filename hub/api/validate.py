"""Request body checks: JSON object, known fields only, right types, sane names and ranges.

Every failure names the field, so the CLI can say exactly what to fix.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hub.errors import BadRequest, Invalid, TooLarge
from protocol.api import DEFAULT_LIMIT, MAX_BODY_BYTES, MAX_LIMIT, TARGET_KINDS, FieldDoc
from protocol.subjects import valid_device_id

# Tags, group names and tenants end up in subjects, selectors and tables; keep them plain.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")  # fullmatch: "$" matches before "\n"
NAME_RULE = "must be 1-63 of a-z 0-9 _ . - starting with a letter or digit"
MAX_TEXT = 1000

_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "object": (dict,),
    "list": (list,),
    "int|str": (int, str),
}
_TYPE_WORDS = {
    "str": "a string",
    "int": "an integer",
    "bool": "true or false",
    "object": "an object",
    "list": "a list",
    "int|str": "an integer or a string",
}


def parse_body(raw: bytes, fields: dict[str, FieldDoc]) -> dict[str, Any]:
    if len(raw) > MAX_BODY_BYTES:
        raise TooLarge(f"request body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}", "$")
    if not raw.strip():
        doc: Any = {}
    else:
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"request body is not JSON: {exc}", field="$") from exc
        except RecursionError:
            # json's decoder refuses nesting past the interpreter's recursion limit with
            # this (no ValueError): a body under the size limit could be an internal error.
            raise BadRequest("request body is JSON nested too deeply", field="$") from None
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object", field="$")
    if _SURROGATE_ESCAPE.search(raw):
        _refuse_lone_surrogates(doc)
    for name in doc:
        if name not in fields:
            known = ", ".join(sorted(fields)) or "none"
            shown = name if len(name) <= 64 else name[:64] + "..."  # echo input, bounded
            raise Invalid(f"unknown field {shown!r} (known: {known})", field=shown)
    for name, (type_name, required) in fields.items():
        if name not in doc or doc[name] is None:
            if required:
                raise Invalid(f"{name} is required", field=name)
            doc.pop(name, None)
            continue
        value = doc[name]
        ok = isinstance(value, _TYPES[type_name])
        if type_name in ("int", "int|str") and isinstance(value, bool):
            ok = False  # JSON true is not a number, whatever Python thinks
        if not ok:
            raise Invalid(f"{name} must be {_TYPE_WORDS[type_name]}", field=name)
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise Invalid(f"{name} must be at most {MAX_TEXT} characters", field=name)
    return doc


# JSON may escape a UTF-16 surrogate (``\\ud800``) with no partner, which decodes to a str
# that no UTF-8 encoder takes: SQLite, the reply, the log all failed on it ("internal error")
# after the handler ran. A pair (an emoji written as two escapes) decodes to one character.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_lone_surrogates(doc: dict[str, Any]) -> None:
    for key, value in doc.items():
        try:
            json.dumps([key, value], ensure_ascii=False).encode()
        except UnicodeEncodeError:
            shown = key.encode("utf-8", "backslashreplace").decode()[:64]
            raise Invalid(
                f"{shown} holds text that is not Unicode (an unpaired surrogate escape,"
                " \\ud800-\\udfff)",
                field=shown,
            ) from None


def name(value: str, field: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise Invalid(f"{field} {value!r} {NAME_RULE}", field=field)
    return value


def device_id(value: str, field: str = "id") -> str:
    if not valid_device_id(value):
        raise Invalid(
            f"{field} {value!r} is not a device id (1-63 of a-z 0-9 -, not starting or ending "
            "with -)",
            field=field,
        )
    return value


def limit(body: dict[str, Any]) -> int:
    value = int(body.get("limit", DEFAULT_LIMIT))
    if not 1 <= value <= MAX_LIMIT:
        raise Invalid(f"limit must be 1-{MAX_LIMIT}", field="limit")
    return value


def int_range(body: dict[str, Any], field: str, low: int, high: int, default: int) -> int:
    value = int(body.get(field, default))
    if not low <= value <= high:
        raise Invalid(f"{field} must be {low}-{high}", field=field)
    return value


def target(value: str, field: str = "target") -> tuple[str, str]:
    """``"group:lab"`` -> ``("group", "lab")``."""
    kind, sep, rest = value.partition(":")
    if not sep or kind not in TARGET_KINDS:
        raise Invalid(
            f"{field} must be device:ID, group:NAME or tag:NAME, got {value!r}", field=field
        )
    if kind == "device":
        device_id(rest, field)
    else:
        name(rest, field)
    return kind, rest
