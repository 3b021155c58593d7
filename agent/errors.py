"""The agent's one exception tree.

Everything the agent raises on purpose derives from ``AgentError``; boundaries (CLI, HTTP API,
sync RPC) translate it into the shared error shape in ``protocol.errors``.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """A config value is missing or invalid; ``field`` is its dotted path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class StoreError(AgentError):
    """The local SQLite store failed an operation."""


class StoreCorrupt(StoreError):
    """The store file is not a usable SQLite database."""


class StoreFull(StoreError):
    """The store could not write because its filesystem (or quota) is full; the write was
    rolled back whole. Boundaries answer it as "insufficient storage", not as a bug."""


class EngineError(AgentError):
    """The container engine refused or failed a call."""


class EngineUnavailable(EngineError):
    """No container engine answered; ``tried`` lists the sockets or URLs attempted."""

    def __init__(self, message: str, tried: list[str] | None = None) -> None:
        self.tried: list[str] = list(tried or [])
        if self.tried:
            message = f"{message} (tried: {', '.join(self.tried)})"
        super().__init__(message)


class PullError(EngineError):
    """An image pull failed."""


class DiskFull(AgentError):
    """An operation would not fit in the free disk or the configured image budget."""
