"""Snapshots (pytest-textual-snapshot) of the fleet screen at 80x24 against a real hub.

Only what is stable goes in: seeded devices that were never seen (no ages), and the header's
hub URL (a free port, different every run) replaced before the picture is taken.
Update after an intended change with ``pytest --snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from hub.store import Store
from tests.integration.test_tui_support import Hub, view_loaded, wait_for


def seed(store: Store) -> None:
    for i, tags in enumerate((["rpi", "lab"], ["rpi"], ["x86"])):
        store.upsert_device(f"edge-{i}", "acme", hostname=f"edge-{i}", tags=tags)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    h = Hub(tmp_path_factory.mktemp("tuisnap") / "data", seed)
    try:
        yield h
    finally:
        assert h.stop() == 0, h.proc.log_tail()


async def loaded(pilot: Pilot[Any]) -> None:
    await wait_for(pilot, view_loaded(pilot.app, "#fleet-view"), "the fleet loaded")
    pilot.app.sub_title = "hub under test"


def test_fleet_screen(hub: Hub, snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(hub.app(), terminal_size=(80, 24), run_before=loaded)


def test_fleet_screen_empty_filter(hub: Hub, snap_compare: Callable[..., bool]) -> None:
    async def filtered(pilot: Pilot[Any]) -> None:
        await loaded(pilot)
        await pilot.press("slash")
        pilot.app.screen.query_one("#fleet-filter", Input).value = "tag:nowhere"
        await pilot.press("enter")
        await wait_for(pilot, view_loaded(pilot.app, "#fleet-view", 2), "filter applied")

    assert snap_compare(hub.app(), terminal_size=(80, 24), run_before=filtered)
