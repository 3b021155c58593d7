"""The Fleet's k9s keys against a real hub (seeded devices): `d` describe, `y` the desired
and reported documents as YAML, `l` a device's logs, space marks rows and `g` asks about
exactly the marked set, counted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from textual.widgets import DataTable, Static, TabbedContent, TextArea

from tests.harness.tui import Hub, seed, text, view_loaded, wait_for
from tui.dialogs import ConfirmScreen, TextScreen
from tui.screens.device import DeviceScreen
from tui.screens.main import MainScreen


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    h = Hub(tmp_path_factory.mktemp("tuikeys") / "data", seed)
    try:
        yield h
    finally:
        assert h.stop() == 0, h.proc.log_tail()


async def test_describe_yaml_logs_and_marks(hub: Hub) -> None:
    app = hub.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, view_loaded(app, "#fleet-view"), "the fleet loaded")
        table = app.screen.query_one("#fleet-table", DataTable)
        table.focus()

        async def shown_text(key: str) -> str:
            await pilot.press(key)
            await wait_for(pilot, lambda: isinstance(app.screen, TextScreen), f"{key} opens")
            await wait_for(pilot, lambda: bool(app.screen.query("#text-body")), "composed")
            body = app.screen.query_one("#text-body", TextArea).text
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "closed")
            return body

        described = await shown_text("d")  # the cursor is on dev-0
        assert described.startswith("Device:      dev-0")
        assert "Running:     warehouse-monitor@1.2.0" in described
        as_yaml = await shown_text("y")
        assert as_yaml.startswith("device: dev-0\n") and "\nreported:" in as_yaml

        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, DeviceScreen), "device screen")
        tabs = app.screen.query_one("#device-tabs", TabbedContent)
        await wait_for(pilot, lambda: tabs.active == "device-logs-pane", "on its Logs tab")
        assert app.screen.device_id == "dev-0"  # type: ignore[attr-defined]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "back")

        table.focus()
        await pilot.press("down", "space", "space")  # marks dev-1 and dev-2 (space moves on)
        summary = app.screen.query_one("#fleet-summary", Static)
        await wait_for(pilot, lambda: "2 marked" in text(summary), "two marked")
        assert str(table.get_cell("dev-1", "device")) == "dev-1 ◆"
        await pilot.press("g")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "asked")
        await wait_for(pilot, lambda: bool(app.screen.query("#confirm-question")), "composed")
        question = text(app.screen.query_one("#confirm-question", Static))
        assert question == "Make them reconcile now — 2 devices (dev-1, dev-2)?"
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "cancelled")
        assert "2 marked" in text(summary)  # nothing done, the marks stay
