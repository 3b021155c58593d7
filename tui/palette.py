"""The command palette (ctrl+p): every `:` command and any loaded device by id, beside
Textual's own entries (keys panel, theme, quit)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.commands import COMMANDS, Command

DEVICE_HITS = 20  # devices shown for one query; the fleet may hold thousands


class PaletteApp(Protocol):
    def run_command(self, command: Command) -> None: ...

    def device_ids(self) -> list[str]: ...


def _entries() -> list[tuple[str, str, Command]]:
    out = []
    for typed, help_text in COMMANDS:
        word = typed.split()[0]
        if word != "dev":
            name = {"devices": "fleet"}.get(word, word)
            out.append((f":{word}", help_text, Command(name)))
    return out


class SignalBeamCommands(Provider):
    def _app(self) -> PaletteApp:
        return cast(PaletteApp, self.app)

    def _run(self, command: Command) -> Callable[[], Any]:
        return partial(self._app().run_command, command)

    async def discover(self) -> Hits:
        for label, help_text, command in _entries():
            yield DiscoveryHit(label, self._run(command), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for label, help_text, command in _entries():
            score = matcher.match(label)
            if score > 0:
                yield Hit(score, matcher.highlight(label), self._run(command), help=help_text)
        shown = 0
        for device_id in self._app().device_ids():
            label = f"device {device_id}"
            score = matcher.match(label)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(label),
                    self._run(Command("device", device_id)),
                    help="open the device",
                )
                shown += 1
                if shown >= DEVICE_HITS:
                    return
