"""The Fleet and the device screen against a real hub: a deferring device shows `⏸ locked
by …` in its row and why on its screen, and `F` forces the marked devices through their
locks only once the device count is typed (a wrong count is refused in the dialog; nothing
is sent)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from bundles.validate import load_file
from hub.store import Store
from tests.harness.tui import Hub, seed, text, view_loaded, wait_for
from tui.dialogs import TypedConfirmScreen
from tui.screens.device import DeviceScreen, DeviceView
from tui.screens.main import MainScreen

EXAMPLE = Path(__file__).resolve().parents[2] / "bundles" / "examples" / "warehouse-monitor"
GATE = {
    "state": "deferred",
    "kind": "locked",
    "reason": "locked by anna since 2026-12-04T21:00+01:00",
    "bundle_ref": "warehouse-monitor@1.3.0",
    "generation": 3,
    "locks": [{"who": "anna", "since": 1.0, "source": "api"}],
}


def seed_gated(store: Store) -> None:
    seed(store)
    store.set_reported("dev-1", {"gate": GATE}, "2026-12-04T20:00:00.000Z")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    h = Hub(tmp_path_factory.mktemp("tuiforce") / "data", seed_gated)
    try:
        yield h
    finally:
        assert h.stop() == 0, h.proc.log_tail()


async def test_deferral_shows_and_f_wants_the_count_typed(hub: Hub) -> None:
    async with hub.client() as admin:
        await admin.call("bundles.push", {"spec": load_file(EXAMPLE / "1.3.0.yaml").to_dict()})
        for d in ("dev-1", "dev-2"):
            await admin.call(
                "assign", {"target": f"device:{d}", "bundle": "warehouse-monitor@1.3.0"}
            )
    app = hub.app()
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_for(pilot, view_loaded(app, "#fleet-view"), "the fleet loaded")
        table = app.screen.query_one("#fleet-table", DataTable)
        await wait_for(
            pilot,
            lambda: "⏸ locked by anna" in str(table.get_cell("dev-1", "bundle")),
            "dev-1's row shows the deferral",
        )
        table.focus()
        await pilot.press("down", "space", "space")  # marks dev-1 and dev-2
        summary = app.screen.query_one("#fleet-summary", Static)
        await wait_for(pilot, lambda: "2 marked" in text(summary), "two marked")
        await pilot.press("F")
        await wait_for(pilot, lambda: isinstance(app.screen, TypedConfirmScreen), "asked")
        await wait_for(pilot, lambda: bool(app.screen.query("#typed-answer")), "composed")
        question = text(app.screen.query_one("#typed-question", Static))
        assert "2 devices (dev-1, dev-2)" in question and "Type 2 to go on" in question
        await pilot.press("1", "enter")
        hint = app.screen.query_one("#typed-hint", Static)
        await wait_for(pilot, lambda: "type 2" in text(hint), "a wrong count is refused")
        assert isinstance(app.screen, TypedConfirmScreen)
        app.screen.query_one("#typed-answer", Input).value = ""
        await pilot.press("2", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "confirmed")
        await wait_for(pilot, lambda: "2 marked" not in text(summary), "marks cleared")

    async with hub.client() as admin:
        for d in ("dev-1", "dev-2"):
            items = (await admin.call("events.list", {"device": d, "limit": 50}))["items"]
            assert any(e["kind"] == "update.forced" for e in items), d
        items = (await admin.call("events.list", {"device": "dev-3", "limit": 50}))["items"]
        assert not any(e["kind"] == "update.forced" for e in items)


async def test_device_screen_says_why_the_update_waits(hub: Hub) -> None:
    async with hub.client() as admin:
        await admin.call(
            "maintenance.set", {"target": "device:dev-1", "windows": ["Sun 02:00-03:00"]}
        )
    app = hub.app()
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_for(pilot, view_loaded(app, "#fleet-view"), "the fleet loaded")
        table = app.screen.query_one("#fleet-table", DataTable)
        table.focus()
        table.move_cursor(row=table.get_row_index("dev-1"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DeviceScreen), "device screen")
        screen = app.screen
        await wait_for(pilot, lambda: screen.query_one(DeviceView).loads >= 1, "loaded")
        reported = screen.query_one("#device-reported", Static)
        await wait_for(pilot, lambda: "deferred: locked by anna" in text(reported), "the gate")
        assert "update warehouse-monitor@1.3.0 deferred: locked by anna since" in text(reported)
        assert "maintenance windows Sun 02:00-03:00 (set at the hub)" in text(reported)
