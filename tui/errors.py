"""The one exception tree of ``tui`` (the ``signalbeam`` CLI and the TUI) and its one
exit-code rule.

``TuiError`` is the root of every error this package raises on purpose; each class says the
exit code a command ending on it has. Errors of other packages (a bundle file that does not
parse, an unreadable file) are translated at the boundary: ``tui.cli.report_error`` for the
verbs, ``tui.app.main`` for the TUI. Anything else is a bug and shows its traceback.

Imports nothing: the CLI's start-up path imports it.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_HUB = 1  # the hub refused the request, could not be reached, or was unusable
EXIT_USAGE = 2  # bad input: flags, the config file, a command, a bundle file (docs/cli.md)
EXIT_CRASH = 70  # the TUI ended without the operator quitting (sysexits' EX_SOFTWARE)


class TuiError(Exception):
    """The root. ``exit_code``: what a command that ends on this error exits with."""

    exit_code = EXIT_HUB


class UsageError(TuiError):
    """The operator's input is wrong (a flag, the config file, a typed command or filter)."""

    exit_code = EXIT_USAGE


class ApiError(TuiError):
    """An error reply from the hub (or no reply at all), in the protocol error shape."""

    exit_code = EXIT_HUB

    def __init__(
        self, code: str, message: str, field: str | None = None, details: Any = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} (field: {self.field})" if self.field else self.message


def exit_code(exc: BaseException) -> int | None:
    """The exit code a command ending on ``exc`` has; None when ``exc`` is not one of ours
    (the boundary translates what it knows, the rest is a bug)."""
    return exc.exit_code if isinstance(exc, TuiError) else None
