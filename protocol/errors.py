"""The one error shape every SignalBeam API returns, over NATS and HTTP alike.

``{"error": {"code": "...", "message": "...", "field": "..."}}`` — ``field`` only when the
error is about one input field (its path, e.g. ``containers[1].ports[0].container``).
"""

from __future__ import annotations

from typing import Any

# Stable machine-readable codes; messages are for people and may change.
BAD_REQUEST = "bad_request"
INVALID = "invalid"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
CONFLICT = "conflict"
TOO_LARGE = "too_large"
METHOD_NOT_ALLOWED = "method_not_allowed"
RATE_LIMITED = "rate_limited"
UNAVAILABLE = "unavailable"
INSUFFICIENT_STORAGE = "insufficient_storage"  # the device's disk is full
DEVICE_OFFLINE = "device_offline"
INTERNAL = "internal"

HTTP_STATUS = {
    BAD_REQUEST: 400,
    INVALID: 422,
    UNAUTHORIZED: 401,
    FORBIDDEN: 403,
    NOT_FOUND: 404,
    METHOD_NOT_ALLOWED: 405,
    CONFLICT: 409,
    TOO_LARGE: 413,
    RATE_LIMITED: 429,
    INTERNAL: 500,
    UNAVAILABLE: 503,
    INSUFFICIENT_STORAGE: 507,
    DEVICE_OFFLINE: 504,
}


def error_body(
    code: str, message: str, field: str | None = None, details: Any = None
) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        err["field"] = field
    if details is not None:
        err["details"] = details
    return {"error": err}


def is_error(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("error"), dict)
