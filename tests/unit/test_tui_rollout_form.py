"""The Rollouts tab's start form (tui/dialogs.py ``RolloutStartScreen``) filled through
Textual's pilot: phases, bake and max failures (a count or a percentage) are parsed by the
CLI's own parsers and sent as ``rollouts.start`` takes them; a wrong field is named under the
fields, focused, and the form stays open. No hub: what the form dismisses with is the body
the view sends (``RolloutsView._start`` passes ``req.body()`` unchanged)."""

from __future__ import annotations

from typing import Any

from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Input, Select, Static

from tui.app import SignalBeamApp
from tui.dialogs import RolloutRequest, RolloutStartScreen

REFS = ["wm@1.2.0", "wm@1.3.0"]


class Harness(App[None]):
    CSS_PATH = SignalBeamApp.CSS_PATH  # the real app's layout

    def __init__(self) -> None:
        super().__init__()
        self.results: list[RolloutRequest | None] = []

    def on_mount(self) -> None:
        self.push_screen(RolloutStartScreen(REFS), self.results.append)


async def fill(pilot: Pilot[Any], **fields: str) -> RolloutStartScreen:
    form = pilot.app.screen
    assert isinstance(form, RolloutStartScreen)
    form.query_one("#rollout-bundle", Select).value = "wm@1.3.0"
    for name, value in fields.items():
        form.query_one(f"#rollout-{name.replace('_', '-')}", Input).value = value
    await pilot.click("#rollout-go")
    await pilot.pause()
    return form


def error_text(form: RolloutStartScreen) -> str:
    return str(form.query_one("#rollout-error", Static).content)


async def test_the_form_sends_phases_bake_and_a_share_of_failures() -> None:
    app = Harness()
    async with app.run_test(size=(120, 40)) as pilot:
        await fill(
            pilot, target="tag:rpi", phases="1%, 10%,50%,100%", bake="10m", max_failures="2%"
        )
        assert len(app.results) == 1 and app.results[0] is not None
        assert app.results[0].body() == {
            "bundle": "wm@1.3.0",
            "target": "tag:rpi",
            "phases": "1%,10%,50%,100%",
            "bake": "10m",
            "max_failures": "2%",
        }


async def test_blank_fields_keep_the_hubs_defaults_and_a_count_is_a_number() -> None:
    app = Harness()
    async with app.run_test(size=(120, 40)) as pilot:
        await fill(pilot, target="group:lab")
        assert app.results[0] is not None
        assert app.results[0].body() == {"bundle": "wm@1.3.0", "target": "group:lab"}
    app = Harness()
    async with app.run_test(size=(120, 40)) as pilot:
        await fill(pilot, target="group:lab", phases="5,50,100%", max_failures="3")
        assert app.results[0] is not None
        assert app.results[0].body()["max_failures"] == 3


async def test_a_bad_phases_string_is_named_in_the_form() -> None:
    app = Harness()
    async with app.run_test(size=(120, 40)) as pilot:
        form = await fill(pilot, target="tag:rpi", phases="1%,ten%", bake="10m")
        assert app.results == []  # still open: nothing sent
        assert app.screen is form
        assert error_text(form).startswith("phases: '1%,ten%' is not phases like 1%,10%,50%,100%")
        assert form.focused is form.query_one("#rollout-phases", Input)
        # Enter in a field submits too (the button ignores a click while it still shows
        # the last one): the next wrong field is named, then the fixed form goes through
        form.query_one("#rollout-phases", Input).value = "1%,10%"
        form.query_one("#rollout-bake", Input).value = "forever"
        await pilot.press("enter")
        await pilot.pause()
        assert error_text(form).startswith("bake: 'forever'")
        assert form.focused is form.query_one("#rollout-bake", Input)
        form.query_one("#rollout-bake", Input).value = ""
        await pilot.press("enter")
        await pilot.pause()
        assert app.results[0] is not None
        assert app.results[0].body()["phases"] == "1%,10%"
