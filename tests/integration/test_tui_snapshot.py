"""Snapshots (pytest-textual-snapshot) of the main screen at 120x40 against a real hub.

Fixed data: devices seeded with fixed statuses, tags, groups, reported state and metric
levels (each device's level is the same in every minute of the last two hours, so the
hub's five-minute buckets draw the same sparkline whatever the clock), and a fixed clock in
the app so "offline 4m" ages do not move. The header's hub URL (a free port, different every
run) is replaced before the picture is taken.
Update after an intended change with ``pytest --snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from hub.store import Store
from tests.harness.tui import Hub, view_loaded, wait_for
from tui.app import SignalBeamApp
from tui.hub.session import HubSession
from tui.widgets.fleet import FleetView

CLOCK = 1_900_000_000.0  # the app's "now"; last_seen values are set relative to it
SIZE = (120, 40)


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def seed(store: Store) -> None:
    fleet = (
        ("edge-0", ["lab", "rpi"], "online", 5, {"bundle_ref": "wm@1.2.0"}, 20.0),
        ("edge-1", ["rpi"], "online", 5, {"bundle_ref": "wm@1.1.0"}, 55.0),
        ("edge-2", ["x86"], "offline", 240, {"bundle_ref": "wm@1.2.0"}, 90.0),
        ("edge-3", ["lab"], "online", 5, {"deployment": {"status": "failed",
         "bundle_ref": "wm@1.2.0", "reason": "image pull failed"}}, 35.0),
        ("edge-4", ["x86"], "unknown", None, None, None),
    )  # fmt: skip
    # Metered links, from the devices' last full heartbeats: the Data column.
    usage = {"edge-0": (50_000, 65_000), "edge-1": (100_000, 41_200)}
    now = time.time()
    minute = int(now) // 60 * 60
    for device_id, tags, status, seen, reported, level in fleet:
        store.upsert_device(device_id, "acme", hostname=device_id, tags=tags)
        if device_id in usage:
            budget, used = usage[device_id]
            beat = json.dumps({"budget": budget, "bytes_day": used})
            store.put_heartbeats([(device_id, beat, None, iso(CLOCK - 5), iso(CLOCK - 5))])
        if seen is not None:
            store.set_device_status(device_id, status, iso(CLOCK - seen))
        if reported is not None:
            store.set_reported(device_id, reported)
        if level is not None:
            store.put_metrics(
                "1m",
                device_id,
                [
                    (name, minute + 60 * m, level, level, level)
                    for m in range(-120, 10)
                    for name in ("cpu.percent", "mem.percent", "disk.percent")
                ],
            )
    store.create_group("north")
    store.add_to_group("north", "edge-1")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    h = Hub(tmp_path_factory.mktemp("tuisnap") / "data", seed)
    try:
        yield h
    finally:
        assert h.stop() == 0, h.proc.log_tail()


def app(hub: Hub) -> SignalBeamApp:
    return SignalBeamApp(HubSession(hub.url, hub.key), poll_seconds=3600, clock=lambda: CLOCK)


async def loaded(pilot: Pilot[Any]) -> None:
    await wait_for(pilot, view_loaded(pilot.app, "#fleet-view"), "the fleet loaded")
    view = pilot.app.screen.query_one(FleetView)
    await wait_for(pilot, lambda: len(view.shown) == 5, "five rows")
    pilot.app.sub_title = "hub under test"


def test_fleet_screen(hub: Hub, snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(hub), terminal_size=SIZE, run_before=loaded)


def test_fleet_filtered_inverted_and_sorted(hub: Hub, snap_compare: Callable[..., bool]) -> None:
    async def filtered(pilot: Pilot[Any]) -> None:
        await loaded(pilot)
        await pilot.press("slash")
        pilot.app.screen.query_one("#fleet-filter", Input).value = "!tag:x86"
        await pilot.press("enter")
        view = pilot.app.screen.query_one(FleetView)
        await wait_for(pilot, lambda: len(view.shown) == 3, "filter applied")
        await pilot.press("s", "S")  # by status, reversed

    assert snap_compare(app(hub), terminal_size=SIZE, run_before=filtered)
