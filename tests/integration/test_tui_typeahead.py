"""Keys typed faster than the app handles them: Textual routes each key to the widget
focused when it arrives, so the key right after `:`, `/` or a tab key once went to the old
focus and was lost (`:rol` became `:`). Here the keys are posted back to back, as a fast
typist's or a starved machine's arrive. No hub is needed (the main screen opens with the
unreachable-hub banner)."""

from __future__ import annotations

from textual import events
from textual.widgets import Input, TabbedContent

from tests.harness.ports import free_port
from tui.app import SignalBeamApp
from tui.hub.session import HubSession


def app() -> SignalBeamApp:
    return SignalBeamApp(HubSession(f"nats://127.0.0.1:{free_port()}", "key", timeout=2))


def post(a: SignalBeamApp, keys: str) -> None:
    names = {":": "colon", "/": "slash"}
    for ch in keys:
        a.post_message(events.Key(names.get(ch, ch), ch))


async def test_keys_right_after_colon_slash_and_a_tab_key_land() -> None:
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        post(a, ":rol")
        await pilot.pause(0.5)
        assert a.screen.query_one("#command-line", Input).value == ":rol"
        await pilot.press("escape")
        await pilot.pause(0.3)
        post(a, "/tag:x/")  # `:` and `/` inside the filter box are text
        await pilot.pause(0.5)
        assert a.screen.query_one("#fleet-filter", Input).value == "tag:x/"
        assert a.screen.query_one("#command-line").display is False
        await pilot.press("escape")
        await pilot.pause(0.3)
        post(a, "ax")  # the Assign tab focuses its target box: `x` is typed there
        await pilot.pause(0.5)
        assert a.screen.query_one("#tabs", TabbedContent).active == "assign"
        assert a.screen.query_one("#assign-target", Input).value == "x"
