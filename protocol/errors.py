"""The one error shape every SignalBeam API returns, over NATS and HTTP alike.

``{"error": {"code": "...", "message": "...", "field": "..."}}`` — ``field`` only when the
error is about one input field (its path, e.g. ``containers[1].ports[0].container``).

And the package's one exception tree: ``ProtocolError`` is the root; ``MessageError`` (a
message that fails validation, also a ``ValueError``; ``DesiredDecodeError`` for the desired
document) and ``RemoteError`` (the other side answered with the error shape) are its families.
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


class ProtocolError(Exception):
    """The root of every error the wire contract raises: catch this one to handle them all."""


class MessageError(ProtocolError, ValueError):
    """A message failed validation. ``field`` is its path (``$`` for the whole message);
    ``code`` is one of the codes above (``invalid``, ``too_large`` or ``bad_request``)."""

    def __init__(self, field: str, message: str, code: str = INVALID) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.code = code


class DesiredDecodeError(MessageError):
    """A desired-state document (``protocol.desired``) failed validation."""


class RemoteError(ProtocolError):
    """The other side answered with the shared error shape."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (field {field})" if field else ""))
        self.code = code
        self.message = message
        self.field = field
