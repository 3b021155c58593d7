"""Errors of the sync package, under the agent's one tree (``agent.errors.AgentError``)."""

from __future__ import annotations

from agent.errors import AgentError


class SyncError(AgentError):
    """Sync with the hub failed in a way the caller must hear about."""


class EnrollError(SyncError):
    """Enrollment was refused or could not complete. ``code`` is the hub's error code
    (``protocol.errors``) when the hub answered, else ``unavailable``."""

    def __init__(self, message: str, code: str = "unavailable", field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


class LeafError(SyncError):
    """The supervised leaf nats-server could not be configured or started."""


class RpcFailure(SyncError):
    """Raised by an RPC callback to answer with a specific error code (``protocol.errors``)."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
