"""The `:` command line: aliases, parsing and completion (pure; no Textual)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tui.errors import UsageError

# alias -> command
ALIASES: dict[str, str] = {
    "devices": "fleet",
    "fleet": "fleet",
    "bundles": "bundles",
    "rollouts": "rollouts",
    "assign": "assign",
    "dev": "device",
    "device": "device",
    "help": "help",
    "q": "quit",
    "quit": "quit",
}
# (what to type, what it does): the help text, the completion order and the palette's list.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("devices", "the Fleet tab (also :fleet)"),
    ("bundles", "the Bundles tab"),
    ("assign", "the Assign tab"),
    ("rollouts", "the Rollouts tab"),
    ("dev ID", "open a device"),
    ("help", "every key, grouped by view (also ?)"),
    ("quit", "quit (also :q)"),
)
TABS = ("fleet", "bundles", "assign", "rollouts")


class CommandError(UsageError, ValueError):
    """A typed ``:`` command that does not parse."""


@dataclass(frozen=True)
class Command:
    name: str  # a value of ALIASES
    arg: str | None = None


def parse_command(text: str) -> Command:
    """``devices``, ``:dev sim-0001``, ``q``; a leading ``:`` is optional."""
    words = text.strip().removeprefix(":").split()
    if not words:
        raise CommandError("type a command, e.g. :devices, :dev ID, :q")
    name = ALIASES.get(words[0].lower())
    if name is None:
        known = ", ".join(f":{c.split()[0]}" for c, _ in COMMANDS)
        raise CommandError(f"unknown command :{words[0]} (known: {known})")
    if name == "device":
        if len(words) != 2:
            raise CommandError(":dev needs one device id, e.g. :dev sim-0001")
        return Command(name, words[1])
    if len(words) > 1:
        raise CommandError(f":{words[0]} takes no argument")
    return Command(name)


def complete(text: str, device_ids: Iterable[str]) -> str | None:
    """The completed line for what is typed so far (``:ro`` → ``:rollouts``,
    ``:dev sim-00`` → ``:dev sim-0001``), or None."""
    typed = text.removeprefix(":")
    if not typed:
        return None
    head, space, rest = typed.partition(" ")
    if space:
        if ALIASES.get(head.lower()) != "device" or " " in rest:
            return None
        match = next((d for d in sorted(device_ids) if d.startswith(rest) and d != rest), None)
        return f":{head} {match}" if match else None
    for alias in sorted(ALIASES, key=lambda a: (len(a), a)):
        if alias.startswith(typed.lower()) and alias != typed.lower():
            return f":{alias}"
    return None


# --- the `?` help, grouped by view --------------------------------------------------------
KEY_NAMES = {
    "question_mark": "?",
    "colon": ":",
    "slash": "/",
    "space": "space",
    "escape": "esc",
    "enter": "enter",
}


def key_label(keys: str, display: str | None = None) -> str:
    """How a binding's key reads in the help: ``ctrl+r``, ``?``, ``n / esc``."""
    if display:
        return display
    return " / ".join(KEY_NAMES.get(k.strip(), k.strip()) for k in keys.split(","))


def help_lines(sections: Iterable[tuple[str, Iterable[tuple[str, str]]]]) -> list[str]:
    """The help text: one block per view, ``key  what it does`` aligned within the block,
    keys repeated in a view listed once."""
    out: list[str] = []
    for title, keys in sections:
        rows = list(dict.fromkeys((k, d) for k, d in keys if d))
        if not rows:
            continue
        width = max(len(k) for k, _ in rows)
        if out:
            out.append("")
        out.append(title)
        out += [f"  {k.ljust(width)}  {d}" for k, d in rows]
    return out
