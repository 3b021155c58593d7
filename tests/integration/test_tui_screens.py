"""The whole TUI, end to end: the real ``SignalBeamApp`` with Pilot against a real
`signalbeam-hub run` and simulated devices (bench/sim) enrolled and publishing reports.

One walk through every screen (kept in one test so the hub and the simulated fleet start
once): every tab by key and by `:` command, the fleet filtered and sorted, a device opened
from its row with every device tab, an assignment through its dialog (which counts the
device), a rollout through its form and confirmation (which counts 3 devices) followed live
to Succeeded, the devices running the new version, and a device whose link is cut turning
its Fleet row offline from change notices alone (no reload). Then the Logs tab of an offline
device and read-only mode.

The simulator does not answer remote commands, so the Logs tab's happy path (a real
agent's container log) is not covered here; its merge and search are unit-tested.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, ProgressBar, Select, Sparkline, Static, TabbedContent

from bench.sim import UNBEATABLE_GRACE_S, SimFleet, SimOptions
from tests.harness.sync_hub import SyncHub
from tests.harness.tui import rows, text, wait_for
from tests.harness.wait import eventually
from tui.app import SignalBeamApp
from tui.dialogs import ConfirmScreen, PushScreen, RolloutStartScreen
from tui.hub.session import HubSession
from tui.screens.device import DeviceScreen, DeviceView
from tui.screens.main import MainScreen
from tui.widgets.assign import AssignView
from tui.widgets.fleet import FleetView
from tui.widgets.logs import LogsPane
from tui.widgets.rollouts import RolloutsView

# Seconds without a heartbeat before the hub marks a device offline: the walk is not about
# presence, so starvation must never turn a device offline there; the presence tests get a
# hub of their own with a short grace.
GRACE = UNBEATABLE_GRACE_S
PRESENCE_GRACE = 2
WAIT = 120  # bound for conditions checked against the hub (a loaded CI is slow)
SIZE = (120, 40)


def spec(version: str) -> dict[str, Any]:
    return {
        "bundle": "sim-app",
        "version": version,
        "containers": [{"name": "web", "image": f"127.0.0.1:5000/sbtest/hello:{version}"}],
    }


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    h = SyncHub(tmp_path_factory.mktemp("tuiscreens") / "data", grace=GRACE)
    yield h
    assert h.stop() == 0, h.proc.log_tail() if h.proc else ""


@pytest.fixture(scope="module")
def presence_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    """For the tests about a device going offline: a short grace (a starved heartbeat can
    only make a device go offline early there, which those tests tolerate)."""
    h = SyncHub(tmp_path_factory.mktemp("tuipresence") / "data", grace=PRESENCE_GRACE)
    yield h
    assert h.stop() == 0, h.proc.log_tail() if h.proc else ""


async def start_fleet(hub: SyncHub, prefix: str, tag: str, count: int = 3) -> SimFleet:
    async with hub.client() as admin:
        for v in ("1.0.0", "2.0.0"):
            await admin.call("bundles.push", {"spec": spec(v)})
        tok = await admin.call("tokens.create", {"tenant": "sim", "max_uses": count})
        fleet = SimFleet(
            SimOptions(
                hub_url=hub.enroll_url, token=tok["token"], count=count, prefix=prefix,
                tags=(tag,), heartbeat_s=0.5, rollup_s=1.0, apply_s=0.2,
            )
        )  # fmt: skip
        await fleet.start()

        async def online() -> bool:
            page = await admin.call("devices.list", {"tag": tag, "status": "online"})
            return len(page["items"]) == count

        await eventually(online, timeout=WAIT, what="the simulated devices online")
    return fleet


def app_for(hub: SyncHub, read_only: bool = False) -> SignalBeamApp:
    # A long poll: whatever the tests see change arrived through change notices.
    session = HubSession(hub.url, hub.admin_key, timeout=10)
    return SignalBeamApp(session, poll_seconds=3600, read_only=read_only)


def main(app: SignalBeamApp) -> MainScreen:
    for screen in app.screen_stack:
        if isinstance(screen, MainScreen):
            return screen
    raise AssertionError("no main screen")


def active_tab(app: SignalBeamApp) -> str:
    return str(main(app).query_one("#tabs", TabbedContent).active)


async def command(pilot: Pilot[Any], line: str) -> None:
    """Type a `:` command on the main screen's command line."""
    await pilot.press("colon")
    box = main(pilot.app).query_one("#command-line", Input)  # type: ignore[arg-type]
    await wait_for(pilot, lambda: box.has_focus, "the command line focused")
    box.value = line
    await pilot.press("enter")


async def set_filter(pilot: Pilot[Any], view: FleetView, words: str) -> list[str]:
    await pilot.press("slash")
    box = view.query_one("#fleet-filter", Input)
    await wait_for(pilot, lambda: box.has_focus, "the filter box focused")
    box.value = words
    await pilot.press("enter")
    await wait_for(pilot, lambda: view.filter.text() == words.strip(), f"filter {words!r}")
    return [r[0] for r in rows(view.table)]


def settled(app: SignalBeamApp, view: FleetView) -> bool:
    """No reload of the view waiting on its debounce timer or on the hub."""
    loading = any(w.node is view and w.group == "load" and not w.is_finished for w in app.workers)
    return not view._reload_pending and not loading


def status_of(view: FleetView, device_id: str) -> str:
    return str(view.table.get_cell(device_id, "status"))


async def test_every_screen_end_to_end(hub: SyncHub) -> None:
    fleet = await start_fleet(hub, "tsim", "roll")
    try:
        await walk_every_screen(hub, fleet)
    finally:
        await fleet.stop()


async def walk_every_screen(hub: SyncHub, fleet: SimFleet) -> None:
    ids = sorted(fleet.ids)
    app = app_for(hub)
    async with app.run_test(size=SIZE) as pilot:
        view = app.screen.query_one(FleetView)
        await wait_for(pilot, lambda: sorted(view.shown) == ids, "the fleet loaded")
        await wait_for(
            pilot, lambda: all(status_of(view, i) == "● online" for i in ids), "all online"
        )
        summary = view.query_one("#fleet-summary", Static)
        assert text(summary).startswith("3 devices │ online 3 │ offline 0")

        # --- every tab by key, and back by `:` command ---------------------------------
        # (Assign focuses its target box, which takes letters: escape leaves it first.)
        for key, tab in (("b", "bundles"), ("a", "assign"), ("r", "rollouts"), ("f", "fleet")):
            if key == "r":
                await pilot.press("escape")
            await pilot.press(key)
            await wait_for(pilot, lambda tab=tab: active_tab(app) == tab, f"tab {tab}")  # type: ignore[misc]
        # the empty rollouts tab takes the keys itself (its hidden list cannot)
        await pilot.press("r")
        await wait_for(pilot, lambda: app.focused is app.screen.query_one(RolloutsView), "focus")
        await pilot.press("f")
        for line, tab in ((":bundles", "bundles"), (":rollouts", "rollouts"), (":assign", "assign")):  # fmt: skip
            await command(pilot, line)
            await wait_for(pilot, lambda tab=tab: active_tab(app) == tab, f"{line}")  # type: ignore[misc]
        await pilot.press("escape")  # out of the assign target box
        await command(pilot, ":devices")
        await wait_for(pilot, lambda: active_tab(app) == "fleet", ":devices")
        await command(pilot, f":dev {ids[1]}")
        await wait_for(pilot, lambda: isinstance(app.screen, DeviceScreen), ":dev opens it")
        assert app.screen.query_one(DeviceView).device_id == ids[1]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "back to the fleet")

        # --- filter and sort -----------------------------------------------------------
        view.table.focus()
        assert await set_filter(pilot, view, "tag:roll status:online") == ids
        assert await set_filter(pilot, view, ids[1]) == [ids[1]]
        assert text(summary).startswith("1 of 3 devices")
        assert await set_filter(pilot, view, f"!{ids[1]}") == [ids[0], ids[2]]
        assert await set_filter(pilot, view, "status:offline") == []
        assert await set_filter(pilot, view, "") == ids
        await pilot.press("S")  # reverse the sort (by device)
        await wait_for(pilot, lambda: [r[0] for r in rows(view.table)] == ids[::-1], "reversed")
        assert text(summary).endswith("sort Device ▼")
        await pilot.press("s")  # the next column: status
        await wait_for(pilot, lambda: text(summary).endswith("sort Status ▲"), "by status")
        view.set_sort(type(view.sort)())  # back to the default for what follows

        # --- a device from its row: every tab ------------------------------------------
        device_id = ids[0]
        view.table.focus()
        view.table.move_cursor(row=view.table.get_row_index(device_id))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DeviceScreen), "device screen")
        screen = app.screen
        await wait_for(pilot, lambda: screen.query_one(DeviceView).loads >= 1, "device loaded")
        assert text(screen.query_one("#device-facts", Static)).startswith(f"{device_id}  online")
        await wait_for(pilot, lambda: len(screen.query(Sparkline)) > 0, "sparklines (1h)")
        await pilot.press("t")
        note = screen.query_one("#device-metrics-note", Static)
        await wait_for(pilot, lambda: "24h" in text(note).split("·")[0], "24h window")
        tabs = screen.query_one("#device-tabs", TabbedContent)
        for key, pane in (("c", "containers"), ("e", "events"), ("l", "logs"), ("w", "journal")):
            await pilot.press(key)
            await wait_for(pilot, lambda p=pane: tabs.active == f"device-{p}-pane", f"{pane} tab")  # type: ignore[misc]
        events = screen.query_one("#device-events", DataTable)
        await wait_for(pilot, lambda: events.row_count > 0, "events listed")
        await pilot.press("o")
        await wait_for(pilot, lambda: tabs.active == "device-overview", "overview tab")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "back")

        # --- assign through the dialog: it counts the one device ------------------------
        await pilot.press("a")
        assign = app.screen.query_one(AssignView)
        await wait_for(pilot, lambda: assign.loads >= 1, "assign view loaded")
        bundle = app.screen.query_one("#assign-bundle", Select)
        app.screen.query_one("#assign-target", Input).value = f"device:{ids[2]}"
        bundle.value = "sim-app@1.0.0"
        await pilot.click("#assign-go")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "confirmation")
        question = text(app.screen.query_one("#confirm-question", Static))
        assert question.startswith(f"Assign sim-app@1.0.0 to device {ids[2]} — 1 device"), question
        await pilot.press("y")
        await wait_for(pilot, lambda: any(t == "assigned" for _, t, _ in app.notices), "assigned")
        # the fleet row follows live: the device is sent the version, then runs it
        await wait_for(
            pilot,
            lambda: str(view.table.get_cell(ids[2], "bundle")) == "sim-app@1.0.0",
            "the fleet row shows the assigned version running",
        )
        table = app.screen.query_one("#assignments-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, "the assignment listed")
        table.focus()
        await pilot.press("u")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "unassign asks")
        await pilot.press("y")
        await wait_for(pilot, lambda: table.row_count == 0, "assignment removed")

        # --- a rollout through its dialog, followed live to Succeeded --------------------
        await pilot.press("r")
        rollouts = app.screen.query_one(RolloutsView)
        await wait_for(pilot, lambda: rollouts.loads >= 1, "rollouts loaded")
        # A target that selects nobody: the hub's reason at once, no confirmation to answer.
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, RolloutStartScreen), "the form")
        form = app.screen
        form.query_one("#rollout-bundle", Select).value = "sim-app@2.0.0"
        form.query_one("#rollout-target", Input).value = "tag:nobody"
        await pilot.click("#rollout-go")
        await wait_for(
            pilot,
            lambda: any(t == "rollouts.start: invalid" for _, t, _ in app.notices),
            "the refusal",
        )
        assert not isinstance(app.screen, ConfirmScreen | RolloutStartScreen)
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, RolloutStartScreen), "the form")
        form = app.screen
        form.query_one("#rollout-bundle", Select).value = "sim-app@2.0.0"
        form.query_one("#rollout-target", Input).value = "tag:roll"
        await pilot.click("#rollout-go")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "confirmation")
        question = text(app.screen.query_one("#confirm-question", Static))
        assert question.startswith("Start a rollout of sim-app@2.0.0 to tag roll — 3 devices (")
        await pilot.press("y")
        await wait_for(
            pilot, lambda: any(t == "rollout started" for _, t, _ in app.notices), "started"
        )

        def succeeded() -> bool:
            r = rollouts.rollouts.get(rollouts.selected or "", {})
            bar = app.screen.query(ProgressBar).first()
            devices = rows(app.screen.query_one("#rollout-devices", DataTable))
            return (
                r.get("state") == "succeeded"
                and (bar.progress, bar.total) == (3, 3)
                and [d[1] for d in devices] == ["Succeeded"] * 3
            )

        await wait_for(pilot, succeeded, "the rollout followed live to Succeeded")
        assert (
            sorted(r[0] for r in rows(app.screen.query_one("#rollout-devices", DataTable))) == ids
        )
        # pause and resume make no sense once it is done: greyed, not offered
        assert rollouts.check_action("rollout_control", ("pause",)) is None

        # --- bundles: the version's devices; a bad push path is refused -----------------
        await pilot.press("b")
        running = app.screen.query_one("#bundle-running", Static)
        await wait_for(
            pilot,
            lambda: text(running) == "3 device(s) run sim-app@2.0.0",
            f"running {text(running)!r}",
        )
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PushScreen), "push dialog")
        app.screen.query_one("#push-path", Input).value = "/nonexistent/bundle.yaml"
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: any(t == "push: invalid bundle" for _, t, _ in app.notices),
            "push refused",
        )
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "dialog closed")

        await pilot.press("f")
        await wait_for(
            pilot,
            lambda: all(str(view.table.get_cell(i, "bundle")) == "sim-app@2.0.0" for i in ids),
            "every row runs the rolled-out version",
        )
        errors = [(t, m) for sev, t, m in app.notices if sev == "error"]
        # The two we caused.
        assert [t for t, _ in errors] == ["rollouts.start: invalid", "push: invalid bundle"], errors


async def test_a_device_cut_off_turns_its_row_offline_in_place(presence_hub: SyncHub) -> None:
    """A device whose link is cut: its Fleet row turns offline from change notices alone
    (no reload of the table), the counts follow, and it comes back."""
    fleet = await start_fleet(presence_hub, "osim", "pres", count=1)
    device_id = fleet.ids[0]
    try:
        app = app_for(presence_hub)
        async with app.run_test(size=SIZE) as pilot:
            view = app.screen.query_one(FleetView)
            summary = view.query_one("#fleet-summary", Static)
            await wait_for(pilot, lambda: status_of(view, device_id) == "● online", "online")
            await wait_for(pilot, lambda: settled(app, view), "no fleet reload pending")
            loads = view.loads
            await fleet.set_online(device_id, False)
            await wait_for(
                pilot, lambda: status_of(view, device_id).startswith("○ offline"), "offline"
            )
            assert view.loads == loads  # in place: no reload of the table
            await wait_for(
                pilot,
                lambda: text(summary).startswith("1 devices │ online 0 │ offline 1"),
                "counts",
            )
            assert await set_filter(pilot, view, "status:offline") == [device_id]
            await fleet.set_online(device_id, True)
            await wait_for(pilot, lambda: view.table.row_count == 0, "back online: filtered out")
            assert not [m for sev, _, m in app.notices if sev == "error"]
    finally:
        await fleet.stop()


async def test_logs_of_an_offline_device_say_so(presence_hub: SyncHub) -> None:
    hub = presence_hub
    fleet = await start_fleet(hub, "lsim", "logs")
    try:
        device_id = fleet.ids[0]
        async with hub.client() as admin:
            await admin.call("assign", {"target": f"device:{device_id}", "bundle": "sim-app@1.0.0"})

            async def has_containers() -> bool:
                d = await admin.call("devices.get", {"id": device_id})
                observed = ((d.get("reported") or {}).get("state") or {}).get("observed") or {}
                return bool(observed.get("containers"))

            await eventually(has_containers, timeout=WAIT, what="the device reports its containers")
            await fleet.set_online(device_id, False)

            async def offline() -> bool:
                return (await admin.call("devices.get", {"id": device_id}))["status"] == "offline"

            await eventually(offline, timeout=WAIT, what="the hub sees the device offline")
        app = app_for(hub)
        async with app.run_test(size=SIZE) as pilot:
            await command(pilot, f":dev {device_id}")
            await wait_for(pilot, lambda: isinstance(app.screen, DeviceScreen), "device screen")
            await wait_for(pilot, lambda: app.screen.query_one(DeviceView).loads >= 1, "loaded")
            pane = app.screen.query_one(LogsPane)
            await pilot.press("l")
            await wait_for(pilot, lambda: pane.container is not None, "a container picked")
            status = app.screen.query_one("#logs-status", Static)
            await wait_for(pilot, lambda: "device_offline" in text(status), "offline shown")
            assert f"device {device_id} is offline" in text(status)
            assert not any(sev == "error" for sev, _, _ in app.notices)  # in place, no toasts
            await pilot.press("escape")
            assert pane.active is False  # no polling once the screen is gone
    finally:
        await fleet.stop()


async def test_read_only_hides_the_write_actions(hub: SyncHub) -> None:
    app = app_for(hub, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        view = app.screen.query_one(RolloutsView)
        await wait_for(pilot, lambda: view.loads >= 1, "rollouts loaded")
        await pilot.press("s")
        await pilot.pause()
        assert not isinstance(app.screen, RolloutStartScreen)
        assert view.check_action("start_rollout", ()) is False
        assert app.screen.query_one(AssignView).check_action("unassign", ()) is False
        assert app.screen.query_one("#assign-go").disabled
        await command(pilot, ":dev tsim-0000")
        await wait_for(pilot, lambda: isinstance(app.screen, DeviceScreen), "device screen")
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, DeviceScreen)  # no confirmation: restart is off
        footer_keys = {k for k, b in app.screen.active_bindings.items() if b.binding.show}
        assert "R" not in footer_keys and "o" in footer_keys
