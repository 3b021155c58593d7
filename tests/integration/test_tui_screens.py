"""The drill-down screens with Pilot against a real `signalbeam-hub run` and simulated
devices (bench/sim) feeding it: bundles and the devices running a version, a rollout
started through its dialog (the confirmation counts the devices) followed live to
Succeeded, the device screen's tabs, the Logs tab of an offline device, read-only mode.

The simulator does not answer remote commands, so the Logs tab's happy path (a real
agent's container log) is not covered here; its merge and search are unit-tested.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from textual.widgets import DataTable, ProgressBar, Select, Sparkline, Static

from bench.sim import SimFleet, SimOptions
from tests.integration.test_sync_hub_support import SyncHub, eventually
from tests.integration.test_tui_screens_support import ScreensApp
from tests.integration.test_tui_support import rows, text, wait_for
from tui.screens.device import DeviceScreen, DeviceView
from tui.screens.dialogs import ConfirmScreen, PushScreen, RolloutStartScreen
from tui.screens.session import HubSession
from tui.widgets.assign import AssignView
from tui.widgets.logs import LogsPane
from tui.widgets.rollouts import RolloutsView

GRACE = 2


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


async def start_fleet(hub: SyncHub, prefix: str, tag: str) -> SimFleet:
    async with hub.client() as admin:
        for v in ("1.0.0", "2.0.0"):
            await admin.call("bundles.push", {"spec": spec(v)})
        tok = await admin.call("tokens.create", {"tenant": "sim", "max_uses": 3})
        fleet = SimFleet(
            SimOptions(
                hub_url=hub.enroll_url, token=tok["token"], count=3, prefix=prefix,
                tags=(tag,), heartbeat_s=0.5, rollup_s=1.0, apply_s=0.2,
            )
        )  # fmt: skip
        await fleet.start()

        async def online() -> bool:
            page = await admin.call("devices.list", {"tag": tag, "status": "online"})
            return len(page["items"]) == 3

        await eventually(online, 30, "the simulated devices online")
    return fleet


@pytest.fixture
async def fleet(hub: SyncHub) -> AsyncIterator[SimFleet]:
    f = await start_fleet(hub, "tsim", "roll")
    try:
        yield f
    finally:
        await f.stop()


def app_for(hub: SyncHub, read_only: bool = False) -> ScreensApp:
    return ScreensApp(HubSession(hub.url, hub.admin_key, timeout=10), read_only=read_only)


async def test_rollout_through_the_dialog_reaches_succeeded(hub: SyncHub, fleet: SimFleet) -> None:
    app = app_for(hub)
    async with app.run_test(size=(120, 40)) as pilot:
        view = app.query_one(RolloutsView)
        await wait_for(pilot, lambda: view.loads >= 1, "rollouts loaded")
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, RolloutStartScreen), "the form")
        form = app.screen
        form.query_one("#rollout-bundle", Select).value = "sim-app@2.0.0"
        form.query_one("#rollout-target").value = "tag:roll"  # type: ignore[attr-defined]
        await pilot.click("#rollout-go")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "confirmation")
        question = text(app.screen.query_one("#confirm-question", Static))
        assert question.startswith("Start a rollout of sim-app@2.0.0 to tag roll — 3 devices (")
        await pilot.press("y")
        await wait_for(
            pilot, lambda: any(t == "rollout started" for _, t, _ in app.notices), "started"
        )

        def succeeded() -> bool:
            r = view.rollouts.get(view.selected or "", {})
            bar = app.query(ProgressBar).first()
            devices = rows(app.query_one("#rollout-devices", DataTable))
            return (
                r.get("state") == "succeeded"
                and (bar.progress, bar.total) == (3, 3)
                and [d[1] for d in devices] == ["Succeeded"] * 3
            )

        await wait_for(pilot, succeeded, "the rollout followed live to Succeeded")
        assert sorted(d[0] for d in rows(app.query_one("#rollout-devices", DataTable))) == sorted(
            fleet.ids
        )
        # pause and resume make no sense once it is done: greyed, not offered
        assert app.query_one(RolloutsView).check_action("rollout_control", ("pause",)) is None

        # bundles: the version's spec and the devices that now run it
        await pilot.press("b")
        running = app.query_one("#bundle-running", Static)
        await wait_for(
            pilot,
            lambda: text(running) == "3 device(s) run sim-app@2.0.0",
            f"running {text(running)!r}",
        )
        assert sorted(r[0] for r in rows(app.query_one("#bundle-devices", DataTable))) == sorted(
            fleet.ids
        )
        # push: a bad path is refused with a clear message, not a traceback
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PushScreen), "push dialog")
        app.screen.query_one("#push-path").value = "/nonexistent/bundle.yaml"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: any(t == "push: invalid bundle" for _, t, _ in app.notices),
            "push refused",
        )

        # the device screen, from a device that runs the new version
        device_id = fleet.ids[0]
        app.open_device(device_id)
        await wait_for(pilot, lambda: isinstance(app.screen, DeviceScreen), "device screen")
        screen = app.screen
        await wait_for(pilot, lambda: screen.query_one(DeviceView).loads >= 1, "device loaded")
        facts = text(screen.query_one("#device-facts", Static))
        assert facts.startswith(f"{device_id}  online") and "desired sim-app@2.0.0" in facts
        await wait_for(pilot, lambda: len(screen.query(Sparkline)) > 0, "sparklines (1h)")
        await pilot.press("t")
        note = screen.query_one("#device-metrics-note", Static)
        await wait_for(pilot, lambda: "24h" in text(note).split("·")[0], "24h window")
        await pilot.press("c")
        containers = screen.query_one("#device-container-detail", DataTable)
        await wait_for(pilot, lambda: containers.row_count > 0, "containers tab")
        await pilot.press("e")
        events = screen.query_one("#device-events", DataTable)
        await wait_for(pilot, lambda: events.row_count > 0, "events tab")
        await pilot.press("w")
        journal = screen.query_one("#device-journal", Static)
        assert text(journal).startswith("hub wants: sim-app@2.0.0")
        # restart asks first, naming the container and the one device
        await pilot.press("c", "R")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "restart confirm")
        question = text(app.screen.query_one("#confirm-question", Static))
        assert (
            question.startswith("Restart container ") and f"on {device_id} — 1 device?" in question
        )
        await pilot.press("n")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, DeviceScreen), "back")


async def test_logs_of_an_offline_device_say_so(hub: SyncHub) -> None:
    fleet = await start_fleet(hub, "lsim", "logs")
    try:
        device_id = fleet.ids[0]
        async with hub.client() as admin:
            await admin.call("assign", {"target": f"device:{device_id}", "bundle": "sim-app@1.0.0"})

            async def has_containers() -> bool:
                d = await admin.call("devices.get", {"id": device_id})
                observed = ((d.get("reported") or {}).get("state") or {}).get("observed") or {}
                return bool(observed.get("containers"))

            await eventually(has_containers, 30, "the device reports its containers")
            await fleet.set_online(device_id, False)

            async def offline() -> bool:
                return (await admin.call("devices.get", {"id": device_id}))["status"] == "offline"

            await eventually(offline, 30, "the hub sees the device offline")
        app = app_for(hub)
        async with app.run_test(size=(120, 40)) as pilot:
            app.open_device(device_id)
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
    async with app.run_test(size=(120, 40)) as pilot:
        view = app.query_one(RolloutsView)
        await wait_for(pilot, lambda: view.loads >= 1, "rollouts loaded")
        await pilot.press("s")
        await pilot.pause()
        assert not isinstance(app.screen, RolloutStartScreen)
        assert view.check_action("start_rollout", ()) is False
        assert app.query_one(AssignView).check_action("unassign", ()) is False
        assert app.query_one("#assign-go").disabled
        app.open_device("tsim-0000")
        await wait_for(pilot, lambda: isinstance(app.screen, DeviceScreen), "device screen")
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, DeviceScreen)  # no confirmation: restart is off
        footer_keys = {k for k, b in app.screen.active_bindings.items() if b.binding.show}
        assert "R" not in footer_keys and "o" in footer_keys
