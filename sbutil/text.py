"""Wording shared by every package's messages, so the agent, hub, CLI and TUI say it alike."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """ "1 step", "2 steps", "0 devices": never "1 steps" or "2 step(s)"."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def phase_name(number: int) -> str:
    """A rollout phase as everyone counts it, from 1: the API's ``phase`` fields, the hub's
    table, reasons, events, the CLI and the TUI all say "phase 1" for the first."""
    return f"phase {number}"
