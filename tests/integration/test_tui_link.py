"""The TUI when the hub goes away while it runs, and comes back: a plain message, no
traceback, and fresh data after the link returns. Its own hub, since it stops it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from textual.widgets import DataTable

from hub.store import Store
from tests.harness.tui import Hub, rows, view_loaded, wait_for
from tui.screens.device import DeviceScreen
from tui.widgets.banner import HubBanner


def seed(store: Store) -> None:
    store.upsert_device("edge-0", "acme", hostname="edge-0", tags=["rpi"])


@pytest.fixture
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    h = Hub(tmp_path_factory.mktemp("tuilink") / "data", seed)
    try:
        yield h
    finally:
        h.stop()


async def test_hub_restart_is_shown_and_recovered(hub: Hub) -> None:
    app = hub.app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, view_loaded(app, "#fleet-view"), "the fleet loaded")
        assert hub.stop() == 0
        await wait_for(pilot, lambda: app.sub_title.endswith("reconnecting…"), "link down shown")
        assert ("warning", "hub", "lost the connection to the hub; reconnecting") in app.notices
        banner = app.screen.query_one(HubBanner)
        await wait_for(pilot, lambda: banner.has_class("down"), "the banner shown")
        assert "hub unreachable since" in str(banner.content)
        assert "retrying" in str(banner.content) and "data shown is" in str(banner.content)
        # the last data stays on screen (stale, its age in the banner)
        assert rows(app.screen.query_one("#fleet-table", DataTable))[0][0] == "edge-0"
        # A refresh while the hub is away explains itself instead of hanging or crashing.
        await pilot.press("ctrl+r")
        await wait_for(
            pilot,
            lambda: any("not connected to the hub" in m for s, _, m in app.notices if s == "error"),
            "refresh refused plainly",
        )
        # A full screen opened meanwhile carries the banner too (the app updates them all).
        app.push_screen(DeviceScreen("edge-0"))
        await wait_for(
            pilot, lambda: app.screen.query_one(HubBanner).has_class("down"), "its banner shown"
        )
        device_banner = app.screen.query_one(HubBanner)
        assert "hub unreachable since" in str(device_banner.content)
        # Changed while the TUI could not hear it: the reload after reconnecting shows it.
        store = Store.open(hub.data / "hub.db")
        try:
            store.tag_device("edge-0", "lab")
        finally:
            store.close()
        hub.start()
        await wait_for(pilot, lambda: app.sub_title.endswith("· connected"), "link up shown")
        await wait_for(pilot, lambda: not device_banner.has_class("down"), "its banner gone")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, DeviceScreen), "back")
        table = app.screen.query_one("#fleet-table", DataTable)
        await wait_for(pilot, lambda: rows(table)[0][3] == "lab,rpi", "fresh data after reconnect")
        assert not banner.has_class("down")
