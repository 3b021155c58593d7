"""Wording shared by every package's messages, so the agent, hub, CLI and TUI say it alike."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """ "1 step", "2 steps", "0 devices": never "1 steps" or "2 step(s)"."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def wave_name(wave: int) -> str:
    """A wave as people count it: the API's ``wave`` field is 0-based, "wave 1" is the first
    (the CLI's and the TUI's status show it so; reasons and events must agree)."""
    return f"wave {wave + 1}"
