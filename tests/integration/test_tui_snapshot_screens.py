"""Snapshots (pytest-textual-snapshot) of the drill-down screens at 120x40 with fixed data.

The device screen reads a real hub seeded with fixed timestamps, and the TUI's clock is
frozen at the same instant, so every age and the metrics window are the same on every run.
The rollouts view and its dialogs render fixed documents through the view's own entry
points (a rollout on a live fleet moves while the picture is taken).
Update after an intended change with ``pytest --snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot

from hub.store import Store
from tests.harness.tui import Hub, wait_for
from tests.harness.tui_screens import ScreensApp
from tui.app import SignalBeamApp
from tui.dialogs import ConfirmScreen
from tui.hub.session import HubSession
from tui.models import confirm as cm
from tui.screens.device import DeviceView
from tui.widgets.rollouts import RolloutsView

NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
SIZE = (120, 40)


def iso(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def seed(store: Store) -> None:
    store.upsert_device(
        "pi-07", "acme", hostname="pi-07.lab", arch="arm64", os="linux", engine="podman",
        agent_version="0.1.0", tags=["lab", "rpi"],
    )  # fmt: skip
    store.set_device_status("pi-07", "online", iso(NOW - 12))
    store.set_reported(
        "pi-07",
        {
            "desired": {"bundle_ref": "warehouse-monitor@1.3.0", "generation": 4},
            "deployment": {
                "bundle_ref": "warehouse-monitor@1.3.0", "status": "rolled_back",
                "reason": "temp-sensor unhealthy after 60s", "started_at": NOW - 300,
                "finished_at": NOW - 200,
            },
            "reconcile": {
                "result": "failed", "trigger": "desired", "generation": 4, "steps": 5,
                "reason": "health gate failed; rolled back to 1.2.0", "finished_at": NOW - 200,
            },
            "observed": {
                "containers": [
                    {"name": "temp-sensor", "service": "temp-sensor", "state": "running",
                     "health": "unhealthy", "restart_count": 4, "image": "sensor:1.3.0"},
                    {"name": "relay-controller", "service": "relay", "state": "running",
                     "health": "healthy", "restart_count": 0, "image": "relay:1.2.0"},
                ]
            },
        },
        as_of=iso(NOW - 30),
    )  # fmt: skip
    minute = NOW // 60 * 60
    store.put_metrics(
        "1m",
        "pi-07",
        [
            (name, minute - 60 * i, 0.0, base + (i * 7 % 11), 99.0)
            for i in range(60)
            for name, base in (("cpu_percent", 20.0), ("mem_percent", 50.0), ("temp_c", 40.0))
        ],
    )
    # What the hub sends it besides the bundle: a variable from its group shadowing the
    # fleet's, one of its own, and a data budget it does not run under yet.
    store.create_group("north")
    store.add_to_group("north", "pi-07")
    store.set_variable("var", "fleet", "", "SITE_NAME", "fleet", "ops")
    store.set_variable("var", "group", "north", "SITE_NAME", "north", "ops")
    store.set_variable("var", "device", "pi-07", "RELAY_PIN", "17", "ops")
    store.set_budget("device", "pi-07", 100_000, "ops")
    for k in range(25):
        store.add_event(
            "pi-07", "container_restarted" if k % 3 else "health_changed",
            f"temp-sensor event {k}", ts=iso(NOW - 600 + 20 * k),
        )  # fmt: skip


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    h = Hub(tmp_path_factory.mktemp("tuisnapscreens") / "data", seed)
    try:
        yield h
    finally:
        assert h.stop() == 0, h.proc.log_tail()


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tui.screens.device.clock", lambda: float(NOW))


def device_app(hub: Hub) -> ScreensApp:
    app = ScreensApp(HubSession(hub.url, hub.key))
    app.TITLE = "SignalBeam Edge"
    return app


async def open_device(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, ScreensApp)
    await wait_for(pilot, lambda: app.session.connected, "connected")
    app.open_device("pi-07")
    await wait_for(pilot, lambda: app.screen.query_one(DeviceView).loads >= 1, "loaded")
    await wait_for(pilot, lambda: len(app.screen.query(".metric")) == 3, "sparklines")
    await pilot.pause()


def test_device_overview(hub: Hub, frozen: None, snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(device_app(hub), terminal_size=SIZE, run_before=open_device)


def test_device_journal(hub: Hub, frozen: None, snap_compare: Callable[..., bool]) -> None:
    async def journal(pilot: Pilot[Any]) -> None:
        await open_device(pilot)
        await pilot.press("w")
        await pilot.pause()

    assert snap_compare(device_app(hub), terminal_size=SIZE, run_before=journal)


def test_device_containers(hub: Hub, frozen: None, snap_compare: Callable[..., bool]) -> None:
    async def containers(pilot: Pilot[Any]) -> None:
        await open_device(pilot)
        await pilot.press("c")
        await pilot.pause()

    assert snap_compare(device_app(hub), terminal_size=SIZE, run_before=containers)


ROLLOUTS: list[dict[str, Any]] = [
    {
        "id": "r-0002", "bundle": "warehouse-monitor", "version": "1.3.0", "target": "group:lab",
        "state": "paused", "phase": 2, "phase_count": 3, "steps": "1,50%,100%", "bake": 600,
        "max_failures": "10%", "max_failures_allowed": 1, "total": 12,
        "reason": "phase 2 of 3: 1 of 5 devices failed, more than max-failures 10% (0 of 5);"
        " resume to go on anyway, or abort",
        "counts": {"Pending": 5, "Updating": 2, "Succeeded": 4, "Failed": 1},
        "phases": [
            {"number": 1, "size": 1, "state": "done", "done": 1, "failed": 0, "max_failures": 0,
             "bake_left": 0},
            {"number": 2, "size": 5, "state": "running", "done": 4, "failed": 1,
             "max_failures": 0, "bake_left": 0},
            {"number": 3, "size": 6, "state": "pending", "done": 0, "failed": 0,
             "max_failures": 0, "bake_left": 0},
        ],
    },
    {
        "id": "r-0001", "bundle": "warehouse-monitor", "version": "1.2.0", "target": "tag:rpi",
        "state": "succeeded", "phase": 1, "phase_count": 1, "steps": "100%", "max_failures": 0,
        "counts": {"Pending": 0, "Updating": 0, "Succeeded": 12, "Failed": 0},
    },
]  # fmt: skip
DEVICES = [
    {"device": f"pi-{i:02d}", "state": s, "reason": r}
    for i, (s, r) in enumerate(
        [("Succeeded", None)] * 4
        + [("Failed", "temp-sensor unhealthy after 60s; rolled back")]
        + [("Updating", None)] * 2
        + [("Pending", None)] * 5
    )
]


class RolloutsHarness(App[None]):
    CSS_PATH = SignalBeamApp.CSS_PATH
    TITLE = "SignalBeam Edge"
    read_only = False

    def compose(self) -> ComposeResult:
        yield RolloutsView(id="rollouts-view")


async def show_rollouts(pilot: Pilot[Any]) -> None:
    view = pilot.app.query_one(RolloutsView)
    view.show_rollouts(ROLLOUTS)
    view.show_devices({**ROLLOUTS[0], "devices": DEVICES})
    await pilot.pause()


def test_rollouts_with_progress(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(RolloutsHarness(), terminal_size=SIZE, run_before=show_rollouts)


def test_abort_confirmation(snap_compare: Callable[..., bool]) -> None:
    async def confirm(pilot: Pilot[Any]) -> None:
        await show_rollouts(pilot)
        question = cm.rollout_action_question("abort", ROLLOUTS[0])
        pilot.app.push_screen(ConfirmScreen(question))
        await pilot.pause()

    assert snap_compare(RolloutsHarness(), terminal_size=SIZE, run_before=confirm)
