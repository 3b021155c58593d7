"""The hub's one exception tree, translated into the protocol error shape at every boundary."""

from __future__ import annotations

from typing import Any

from protocol import errors as codes


class HubError(Exception):
    code: str = codes.INTERNAL

    def __init__(self, message: str, field: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_body(self) -> dict[str, Any]:
        return codes.error_body(self.code, self.message, self.field, self.details)


class BadRequest(HubError):
    code = codes.BAD_REQUEST


class Invalid(HubError):
    code = codes.INVALID


class Unauthorized(HubError):
    code = codes.UNAUTHORIZED


class Forbidden(HubError):
    code = codes.FORBIDDEN


class NotFound(HubError):
    code = codes.NOT_FOUND


class Conflict(HubError):
    code = codes.CONFLICT


class TooLarge(HubError):
    code = codes.TOO_LARGE


class Unavailable(HubError):
    code = codes.UNAVAILABLE


class ConfigError(HubError):
    """Bad hub configuration or data directory; raised before anything is started."""

    code = codes.INVALID


class DeviceOffline(HubError):
    """A device RPC found no responder: the device's leaf link is down."""

    code = codes.DEVICE_OFFLINE


class DeviceError(HubError):
    """A device answered an RPC with the error shape; its code is passed through."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, field)
        self.code = code
