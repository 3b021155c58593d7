"""The Textual TUI end to end: Pilot drives the app against a real `signalbeam-hub run`
(real nats-server on free loopback ports), started once for the module.

Devices cannot enrol before the sync issue lands, so the module seeds them the way the hub's
own API tests do: through the hub's public store API, before the hub process starts. Every
other change goes through the operator API (``tui.client``), as an operator's would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from textual.command import CommandPalette
from textual.pilot import Pilot
from textual.widgets import (
    DataTable,
    Input,
    OptionList,
    Select,
    Sparkline,
    Static,
    TabbedContent,
    TextArea,
)

from bundles.validate import load_file
from tests.harness.ports import free_port
from tests.harness.tui import (
    EXAMPLES,
    Hub,
    rows,
    seed,
    text,
    view_loaded,
    wait_for,
)
from tui.app import EXIT_HUB, SignalBeamApp
from tui.dialogs import ConfirmScreen, HelpScreen, HubErrorScreen
from tui.hub.session import HubSession
from tui.models import fleet as fm
from tui.screens.device import DeviceScreen
from tui.widgets.banner import HubBanner
from tui.widgets.fleet import FleetView
from tui.widgets.rollouts import EMPTY


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    h = Hub(tmp_path_factory.mktemp("tui") / "data", seed)
    try:
        yield h
    finally:
        assert h.stop() == 0, h.proc.log_tail()


@pytest.fixture(scope="module")
def bundles_pushed(hub: Hub) -> None:
    """Both example versions and a group, through the operator API (once per module)."""

    async def push() -> None:
        async with hub.client() as c:
            for v in ("1.2.0", "1.3.0"):
                await c.call("bundles.push", {"spec": load_file(EXAMPLES / f"{v}.yaml").to_dict()})
            await c.call("groups.create", {"name": "lab"})
            await c.call("groups.add", {"name": "lab", "device": "dev-1"})

    asyncio.run(push())


@pytest.fixture
async def pilot(hub: Hub, bundles_pushed: None) -> AsyncIterator[Pilot[Any]]:
    app = hub.app()
    async with app.run_test(size=(80, 24)) as p:
        await wait_for(p, view_loaded(app, "#fleet-view"), "the fleet loaded")
        yield p


def fleet(pilot: Pilot[Any]) -> DataTable[Any]:
    return pilot.app.screen.query_one("#fleet-table", DataTable)


async def test_fleet_lists_devices_with_summary(pilot: Pilot[Any]) -> None:
    table = fleet(pilot)
    got = rows(table)
    assert [r[0] for r in got] == [f"dev-{i}" for i in range(5)]
    dev0 = got[0]
    assert dev0[1] == "● online" and dev0[3] == "rpi" and dev0[5] == "warehouse-monitor@1.2.0"
    assert dev0[2] == "<1m"  # Seen: the age since the last heartbeat
    assert got[1][1] == "? unknown" and got[1][4] == "lab" and got[3][3] == "x86"
    assert got[1][2] == "never"
    summary = text(pilot.app.screen.query_one("#fleet-summary", Static))
    assert summary.startswith("5 devices") and "online 1" in summary and "offline 0" in summary
    assert pilot.app.screen.query_one("#fleet-empty").display is False
    # ? shows every key grouped by view (from the bindings), and closes again
    await pilot.press("question_mark")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, HelpScreen), "the help")
    help_text = text(pilot.app.screen.query_one("#help-text", Static))
    for section in ("Everywhere", "Main screen (tabs)", "Fleet", "Rollouts", "Device"):
        assert f"\n{section}\n" in f"\n{help_text}\n", section
    assert "  /      Filter" in help_text.split("\nFleet\n")[1].split("\n\n")[0]
    await pilot.press("question_mark")
    await wait_for(pilot, lambda: not isinstance(pilot.app.screen, HelpScreen), "help gone")


async def test_fleet_filter_by_tag_group_status_text_and_negation(pilot: Pilot[Any]) -> None:
    app = pilot.app

    async def apply(query: str, expected: list[str]) -> None:
        await pilot.press("slash")
        box = app.screen.query_one("#fleet-filter", Input)
        box.value = query
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: [r[0] for r in rows(fleet(pilot))] == expected, f"filter {query!r}"
        )

    await apply("tag:rpi", ["dev-0", "dev-1", "dev-2"])
    await apply("!tag:rpi", ["dev-3", "dev-4"])
    await apply("group:lab", ["dev-1"])
    await apply("status:online", ["dev-0"])
    await apply("!status:online tag:rpi", ["dev-1", "dev-2"])
    await apply("host-4", ["dev-4"])
    await apply("tag:x86 status:online", [])
    assert app.screen.query_one("#fleet-empty").display is True
    await apply("", [f"dev-{i}" for i in range(5)])
    # A filter that matches nothing says so, not how to enrol devices.
    await apply("no-such-device", [])
    empty = app.screen.query_one("#fleet-empty", Static)
    assert "No device matches 'no-such-device' (5 loaded)" in text(empty)
    assert "enrol" not in text(empty)
    # A bad filter says so and shows nothing stale (no rows as if they matched); Enter
    # repeats the reason; Esc clears it: the whole fleet again.
    await pilot.press("slash")
    app.screen.query_one("#fleet-filter", Input).value = "status:sideways"
    await wait_for(
        pilot, lambda: text(empty).startswith("Invalid filter: unknown status 'sideways'"), "why"
    )
    assert not rows(fleet(pilot))
    assert "invalid filter" in text(app.screen.query_one("#fleet-summary", Static))
    await pilot.press("enter")
    await wait_for(pilot, lambda: "unknown status" in str(list(app.notices)), "filter error")
    await pilot.press("escape")
    await wait_for(pilot, lambda: len(rows(fleet(pilot))) == 5, "Esc cleared the filter")
    assert app.screen.query_one("#fleet-filter", Input).value == ""


async def test_fleet_filters_as_you_type(pilot: Pilot[Any]) -> None:
    app = pilot.app
    await pilot.press("slash")
    box = app.screen.query_one("#fleet-filter", Input)
    await wait_for(pilot, lambda: box.has_focus, "the filter box focused")
    await pilot.press("h", "o", "s", "t", "-", "4")  # free text, re-filtered per key
    await wait_for(pilot, lambda: [r[0] for r in rows(fleet(pilot))] == ["dev-4"], "host-4")
    await pilot.press(*["backspace"] * 6)
    await wait_for(pilot, lambda: len(rows(fleet(pilot))) == 5, "emptied: everything")
    await pilot.press("t", "a", "g", "colon")  # "tag:" does not parse yet: nothing stale
    await wait_for(pilot, lambda: not rows(fleet(pilot)), "tag: alone shows nothing")
    await pilot.press("x", "8", "6")
    await wait_for(
        pilot, lambda: [r[0] for r in rows(fleet(pilot))] == ["dev-3", "dev-4"], "tag:x86"
    )
    assert box.value == "tag:x86" and box.has_focus  # still typing: no Enter needed
    await pilot.press("escape")
    await wait_for(pilot, lambda: len(rows(fleet(pilot))) == 5, "Esc cleared it")
    assert fleet(pilot).has_focus


async def test_fleet_sorts_and_vi_keys_move_the_cursor(pilot: Pilot[Any]) -> None:
    app = pilot.app
    table = fleet(pilot)
    summary = app.screen.query_one("#fleet-summary", Static)
    await pilot.press("j", "j")
    await wait_for(pilot, lambda: table.cursor_row == 2, "j moved down")
    await pilot.press("k")
    await wait_for(pilot, lambda: table.cursor_row == 1, "k moved up")  # on dev-1
    await pilot.press("s")  # Device -> Status: online first, then the unknown ones
    await wait_for(pilot, lambda: "sort Status ▲" in text(summary), "sorted by status")
    assert rows(table)[0][0] == "dev-0"
    assert rows(table)[table.cursor_row][0] == "dev-1"  # the cursor stays on its device
    await pilot.press("S")
    await wait_for(pilot, lambda: rows(table)[-1][0] == "dev-0", "reversed")
    for _ in range(len(fm.COLUMNS) - 1):
        await pilot.press("s")
    await wait_for(pilot, lambda: "sort Device ▲" in text(summary), "back to the device id")
    assert [r[0] for r in rows(table)] == [f"dev-{i}" for i in range(5)]


async def test_command_line_and_palette(pilot: Pilot[Any]) -> None:
    app = pilot.app
    tabs = app.screen.query_one("#tabs", TabbedContent)

    async def command(line: str) -> None:
        await pilot.press("colon")
        box = app.screen.query_one("#command-line", Input)
        await wait_for(pilot, lambda: box.has_focus, "command line open")
        box.value = line
        await pilot.press("enter")

    await command(":bundles")
    await wait_for(pilot, lambda: tabs.active == "bundles", ":bundles")
    await command(":rollouts")
    await wait_for(pilot, lambda: tabs.active == "rollouts", ":rollouts")
    await command(":nope")
    await wait_for(pilot, lambda: "unknown command :nope" in app.notices[-1][2], "refused")
    await pilot.press("escape")
    await command(":devices")
    await wait_for(pilot, lambda: tabs.active == "fleet", ":devices")
    await command(":dev dev-3")
    await wait_for(pilot, lambda: isinstance(app.screen, DeviceScreen), ":dev opens a device")
    await pilot.press("escape")
    await wait_for(pilot, lambda: not isinstance(app.screen, DeviceScreen), "back")
    # completion: what the suggester offers for a prefix
    suggester = app.screen.query_one("#command-line", Input).suggester
    assert suggester is not None
    assert await suggester.get_suggestion(":rol") == ":rollouts"
    assert await suggester.get_suggestion(":dev dev-") == ":dev dev-0"
    # the palette finds commands and devices
    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "palette open")
    await pilot.press(*"dev-2")
    await wait_for(
        pilot,
        lambda: (
            "device dev-2"
            in str(app.screen.query(OptionList).first().get_option_at_index(0).prompt)
        ),
        "device hit",
    )
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, DeviceScreen), "palette opens it")
    await pilot.press("escape")
    await wait_for(pilot, lambda: not isinstance(app.screen, DeviceScreen), "back again")


async def test_fleet_updates_live_from_change_notices(pilot: Pilot[Any], hub: Hub) -> None:
    view = pilot.app.screen.query_one("#fleet-view", FleetView)
    loads = view.loads
    async with hub.client() as c:
        await c.call("devices.tag", {"id": "dev-4", "tag": "lab"})
    try:
        await wait_for(
            pilot, lambda: rows(fleet(pilot))[4][3] == "lab,x86", "dev-4's new tag shown"
        )
        assert "dev-4" in view.flashing or view.updates >= 1  # in place, flashed
    finally:
        async with hub.client() as c:
            await c.call("devices.untag", {"id": "dev-4", "tag": "lab"})
    await wait_for(pilot, lambda: rows(fleet(pilot))[4][3] == "x86", "the tag gone again")
    assert view.loads == loads  # the notices named the device: no full reload


async def test_device_detail_facts_containers_events_metrics(pilot: Pilot[Any], hub: Hub) -> None:
    app = pilot.app
    await pilot.press("enter")  # the cursor starts on dev-0
    await wait_for(pilot, lambda: isinstance(app.screen, DeviceScreen), "device screen")
    await wait_for(pilot, view_loaded(app, "#device-view"), "device loaded")
    screen = app.screen
    facts = text(screen.query_one("#device-facts", Static))
    assert "dev-0  online" in facts and "host host-0" in facts and "engine podman" in facts
    reported = text(screen.query_one("#device-reported", Static))
    assert "running warehouse-monitor@1.2.0" in reported and "as of" in reported
    containers = rows(screen.query_one("#device-containers", DataTable))
    assert containers == [
        ["temp-sensor", "running", "healthy"],
        ["relay-controller", "running", "-"],
    ]
    # events: newest first, 15 a page; n pages back, p forward
    events = screen.query_one("#device-events", DataTable)
    assert rows(events)[0][2] == "seeded event 19" and events.row_count == 15
    await pilot.press("n")
    await wait_for(pilot, lambda: rows(events)[0][2] == "seeded event 4", "older page")
    assert "page 2" in text(screen.query_one("#device-events-page", Static))
    await pilot.press("p")
    await wait_for(pilot, lambda: rows(events)[0][2] == "seeded event 19", "newer page")
    # metrics: one sparkline per metric name
    await pilot.press("m")
    await wait_for(pilot, lambda: len(screen.query(Sparkline)) == 2, "two sparklines")
    assert list(screen.query(Sparkline).first().data or [])[-1] == 0.0
    # the open device follows change notices too
    async with hub.client() as c:
        await c.call("devices.tag", {"id": "dev-0", "tag": "cold-room"})
    try:
        facts_now = lambda: text(screen.query_one("#device-facts", Static))  # noqa: E731
        await wait_for(pilot, lambda: "tags cold-room,rpi" in facts_now(), "live facts")
    finally:
        async with hub.client() as c:
            await c.call("devices.untag", {"id": "dev-0", "tag": "cold-room"})
    await pilot.press("escape")
    await wait_for(pilot, lambda: not isinstance(app.screen, DeviceScreen), "back to the fleet")


async def test_bundles_versions_and_spec(pilot: Pilot[Any]) -> None:
    app = pilot.app
    await pilot.press("b")
    spec = app.screen.query_one("#bundle-spec", TextArea)
    await wait_for(pilot, lambda: spec.text.startswith("# warehouse-monitor@1.3.0"), "1.3.0 spec")
    assert rows(app.screen.query_one("#bundles-table", DataTable)) == [
        ["warehouse-monitor", "1.3.0", "2"]
    ]
    versions = app.screen.query_one("#versions-table", DataTable)
    assert [r[0] for r in rows(versions)] == ["1.3.0", "1.2.0"]
    assert "temp-sensor" in spec.text and "sha256:" in spec.text and "null" not in spec.text
    versions.focus()
    await pilot.press("down")
    await wait_for(pilot, lambda: spec.text.startswith("# warehouse-monitor@1.2.0"), "1.2.0 spec")


async def test_assign_after_confirmation(pilot: Pilot[Any], hub: Hub) -> None:
    app = pilot.app
    await pilot.press("a")
    await wait_for(pilot, view_loaded(app, "#assign-view"), "assign view loaded")
    select = app.screen.query_one("#assign-bundle", Select)
    app.screen.query_one("#assign-target", Input).value = "group:lab"
    select.value = "warehouse-monitor@1.3.0"
    await pilot.press("enter")  # in the target box: asks first
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "confirmation")
    await pilot.press("y")
    await wait_for(
        pilot, lambda: any(t == "assigned" for _, t, _ in app.notices), "assigned notice"
    )
    notice = next(m for _, t, m in app.notices if t == "assigned")
    assert "desired state changed on 1 device(s): dev-1" in notice
    table = app.screen.query_one("#assignments-table", DataTable)
    await wait_for(
        pilot, lambda: rows(table)[0][:2] == ["group:lab", "warehouse-monitor@1.3.0"], "listed"
    )
    async with hub.client() as c:
        assert (await c.call("devices.get", {"id": "dev-1"}))["desired"]["via"] == "group:lab"
    # the fleet follows through the change notice
    await wait_for(
        pilot, lambda: rows(fleet(pilot))[1][5] == "- → warehouse-monitor@1.3.0", "fleet marks it"
    )
    # unassign, again after a confirmation
    table.focus()
    await pilot.press("u")
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "confirmation")
    await pilot.press("y")
    await wait_for(pilot, lambda: table.row_count == 0, "assignment removed")
    await wait_for(pilot, lambda: rows(fleet(pilot))[1][5] == "-", "fleet desired cleared")


async def test_assign_refused_shows_the_api_message(pilot: Pilot[Any]) -> None:
    app = pilot.app
    await pilot.press("a")
    await wait_for(pilot, view_loaded(app, "#assign-view"), "assign view loaded")
    app.screen.query_one("#assign-target", Input).value = "group:nope"
    app.screen.query_one("#assign-bundle", Select).value = "warehouse-monitor@1.2.0"
    await pilot.press("enter")
    # The dry run that counts the devices is refused already: the reason, no question.
    await wait_for(
        pilot,
        lambda: ("error", "assign: not_found", "no group 'nope' (field: target)") in app.notices,
        "the hub's refusal as a notification",
    )
    assert not isinstance(app.screen, ConfirmScreen)
    # a malformed target never reaches the hub
    app.screen.query_one("#assign-target", Input).value = "lab"
    await pilot.press("enter")
    await wait_for(pilot, lambda: "target must be" in app.notices[-1][2], "local refusal")
    assert not isinstance(app.screen, ConfirmScreen)


async def test_read_only_key_or_flag_puts_the_app_in_read_only_mode(
    hub: Hub, bundles_pushed: None
) -> None:
    async with hub.client() as c:
        key = (await c.call("keys.create", {"name": "viewer", "role": "readonly"}))["key"]
    app = hub.app(key=key)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, view_loaded(app, "#fleet-view"), "the fleet loaded")
        assert len(rows(app.screen.query_one("#fleet-table", DataTable))) == 5
        # session.whoami said readonly (the screens hide or grey their writes from this)
        await wait_for(pilot, lambda: app.read_only, "read-only from the key's role")
        assert app.sub_title.endswith("· connected · read-only")
        # the header names the hub, its version and the key with its role (k9s' context)
        assert f"{app.session.display_url} · hub 0.1.0 · key viewer (readonly) ·" in app.sub_title
    # An admin key with --read-only: read-only as well.
    app = SignalBeamApp(HubSession(hub.url, hub.key), poll_seconds=3600, read_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, view_loaded(app, "#fleet-view"), "the fleet loaded")
        assert app.read_only and app.role == "admin"
        assert app.sub_title.endswith("read-only")


async def test_rollouts_tab_reads_the_hubs_rollouts(pilot: Pilot[Any]) -> None:
    # The hub serves rollouts.* now (hub/rollouts); none were started in this module, so the
    # tab says how to start one. The older-hub fallback is covered by test_tui_model.
    app = pilot.app
    await pilot.press("r")
    status = app.screen.query_one("#rollouts-status", Static)
    await wait_for(pilot, lambda: text(status) == EMPTY, "the empty rollouts list")
    assert app.screen.query_one("#rollouts-list").display is False
    assert not [n for n in app.notices if n[0] == "error"]


async def test_unreachable_hub_shows_a_banner_and_keeps_retrying() -> None:
    port = free_port()  # nothing listens here
    app = SignalBeamApp(HubSession(f"nats://127.0.0.1:{port}", "sbk_x", timeout=1))
    async with app.run_test(size=(120, 40)) as pilot:
        banner = app.screen.query_one(HubBanner)
        await wait_for(pilot, lambda: banner.has_class("down"), "banner shown")
        assert f"cannot connect to the hub at nats://127.0.0.1:{port}" in text(banner)
        assert "retrying" in text(banner)
        await wait_for(pilot, lambda: "attempt 2" in text(banner), "retried in the background")
        assert not isinstance(app.screen, HubErrorScreen)
        await pilot.press("q")
    assert app.return_value == EXIT_HUB


async def test_refused_api_key_shows_the_hub_reason(hub: Hub) -> None:
    app = hub.app(key="sbk_deadbeef_not-a-real-key")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HubErrorScreen), "error screen")
        title = text(app.screen.query_one("#hub-error-title", Static))
        assert title == "The hub refused the API key"
        assert "SIGNALBEAM_API_KEY" in text(app.screen.query_one("#hub-error-hint", Static))
        await pilot.press("q")
