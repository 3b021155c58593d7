"""The device screen's Logs tab against a real device: a real `signalbeam-hub run`, one
real `signalbeam-agent run` (enrolled with a token, its own leaf nats-server) on the
harness's Podman engine, running a bundle of two containers from the test registry that
each print a numbered line every second. The TUI is the real ``SignalBeamApp`` with the
``DeviceScreen`` pushed on it, driven with Pilot.

It checks what the simulator-backed screen tests cannot: the container's own lines appear;
the tail re-polls while the tab is shown (new lines arrive, merged without repeats or gaps);
``/`` filters to the matching lines and highlights the match; leaving the tab stops the
polls and coming back fills the gap; the picker switches to the other container.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Log, Select, Static

from tests.harness.engines import EngineHandle
from tests.harness.registry import Registry
from tests.harness.sync_e2e import Device, deployed_device
from tests.harness.sync_hub import SyncHub
from tests.harness.tui import text, wait_for
from tui.app import SignalBeamApp
from tui.hub.session import HubSession
from tui.screens.device import DeviceScreen, DeviceView
from tui.widgets import logs as logs_widget
from tui.widgets.logs import LogsPane

pytestmark = [pytest.mark.engine, pytest.mark.slow]

DEVICE = "tlogs-1"
CONTAINERS = ("alpha", "beta")
LINE = re.compile(r"^(alpha|beta) line (\d+) (odd|even)$")


def ticker(name: str) -> str:
    """A shell loop printing ``NAME line N odd|even`` once a second (busybox sh)."""
    return (
        "i=0; while true; do i=$((i+1)); "
        "if [ $((i % 2)) -eq 0 ]; then p=even; else p=odd; fi; "
        f'echo "{name} line $i $p"; sleep 1; done'
    )


def ticker_spec(registry: Registry) -> dict[str, Any]:
    # The pull image has no HEALTHCHECK of its own, so a shell loop in its place is healthy
    # by running; no network: the containers only write to stdout.
    return {
        "bundle": "ticker",
        "version": "1.0.0",
        "containers": [
            {
                "name": name,
                "image": registry.ref("sbtest/pull:1.0"),
                "args": ["/bin/sh", "-c", ticker(name)],
                "network_mode": "none",
            }
            for name in CONTAINERS
        ],
    }


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    proc = SyncHub(tmp_path_factory.mktemp("tuilogshub") / "data")
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


@pytest.fixture(scope="module")
def device(
    hub: SyncHub,
    _podman_service: EngineHandle,
    registry: Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Device]:
    """One agent on Podman, enrolled through the API's token, running the ticker bundle."""
    root = tmp_path_factory.mktemp("tuilogsdev")
    with deployed_device(hub, _podman_service, root, DEVICE, ticker_spec(registry)) as dev:
        yield dev


def numbered(lines: list[str], name: str) -> list[int]:
    """The counters of ``name``'s lines, in the order shown."""
    out = []
    for line in lines:
        m = LINE.match(line)
        if m and m.group(1) == name:
            out.append(int(m.group(2)))
    return out


def contiguous(counters: list[int]) -> bool:
    """No line twice, none missing: what a correct merge of overlapping tails gives. (A
    restart of the container would start again from 1, which this also accepts.)"""
    return all(b == a + 1 or b == 1 for a, b in pairwise(counters))


def picked(pane: LogsPane, service: str) -> bool:
    return pane.container == service


async def quiet(pilot: Pilot[Any], pane: LogsPane) -> None:
    """Let a fetch already on its way to the device finish."""
    await wait_for(pilot, lambda: not any(w.group == "logs" for w in pane.workers), "no fetch")


async def test_logs_tab_tails_a_real_container(hub: SyncHub, device: Device) -> None:
    app = SignalBeamApp(HubSession(hub.url, hub.admin_key, timeout=10), poll_seconds=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready, "connected")
        app.push_screen(DeviceScreen(DEVICE))
        await wait_for(pilot, lambda: isinstance(app.screen, DeviceScreen), "device screen")
        screen = app.screen
        await wait_for(pilot, lambda: screen.query_one(DeviceView).loads >= 1, "device loaded")
        pane = screen.query_one(LogsPane)
        log = screen.query_one("#logs-log", Log)
        status = screen.query_one("#logs-status", Static)
        assert pane.fetches == 0  # nothing is fetched before the tab is shown

        # The first container's own lines, from the engine through agent, leaf and hub.
        await pilot.press("l")
        # The picker offers the bundle's service names, which survive upgrades (the engine's
        # names, sb-<service>-<hash>-<device hash>, do not).
        await wait_for(pilot, lambda: picked(pane, "alpha"), "alpha picked")
        await wait_for(pilot, lambda: len(numbered(list(log.lines), "alpha")) >= 3, "lines")
        assert pane.error is None, pane.error
        assert text(status).startswith(f"{pane.container}: ")

        # Live: the tail re-polls and new lines arrive, merged without repeats or gaps.
        first = pane.fetches
        seen = max(numbered(list(log.lines), "alpha"))
        await wait_for(
            pilot, lambda: max(numbered(list(log.lines), "alpha")) >= seen + 3, "new lines"
        )
        assert pane.fetches > first
        shown = numbered(list(log.lines), "alpha")
        assert contiguous(shown), shown
        assert not numbered(list(log.lines), "beta")

        # A reload of the device (ctrl+r here; a change notice naming it does the same)
        # refreshes the picker's choices but keeps the log and its container.
        view = screen.query_one(DeviceView)
        loads, switches, container = view.loads, pane.switches, pane.container
        kept = list(log.lines)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: view.loads > loads, "device reloaded")
        await pilot.pause()
        assert (pane.switches, pane.container) == (switches, container)
        assert list(log.lines)[: len(kept)] == kept

        # `/` search: only the matching lines, the match highlighted; it keeps following.
        await pilot.press("slash")
        search = screen.query_one("#logs-search", Input)
        assert search.has_focus
        await pilot.press(*"EVEN")
        await wait_for(pilot, lambda: "matching 'EVEN'" in text(status), "search applied")
        assert log.lines and all(line.endswith(" even") for line in log.lines), log.lines
        hit = log.render_line(0)
        marked = [s for s in hit if s.text == "even" and s.style is not None and s.style.reverse]
        assert marked, list(hit)
        seen = max(numbered(list(log.lines), "alpha"))
        await wait_for(pilot, lambda: max(numbered(list(log.lines), "alpha")) > seen, "new matches")
        assert all(line.endswith(" even") for line in log.lines)
        # Escape leaves the search box (the screen stays); clearing it shows every line.
        await pilot.press("escape")
        assert isinstance(app.screen, DeviceScreen) and not search.has_focus
        search.value = ""
        await wait_for(pilot, lambda: any(x.endswith(" odd") for x in log.lines), "all lines")
        assert contiguous(numbered(list(log.lines), "alpha"))

        # Leaving the tab stops the polls: none in well over two poll intervals.
        await pilot.press("o")
        assert pane.active is False
        await quiet(pilot, pane)
        stopped = pane.fetches
        await pilot.pause(logs_widget.POLL_SECONDS * 2.5)  # a bound on the check, not a timing
        assert pane.fetches == stopped
        before = max(numbered(list(log.lines), "alpha"))

        # Back on the tab: it fetches at once and fills in what was printed meanwhile.
        await pilot.press("l")
        await wait_for(pilot, lambda: pane.fetches > stopped, "fetched on return")
        await wait_for(
            pilot, lambda: max(numbered(list(log.lines), "alpha")) > before + 2, "gap filled"
        )
        assert contiguous(numbered(list(log.lines), "alpha"))

        # The picker: the other container's log replaces this one.
        select = screen.query_one("#logs-container", Select)
        select.focus()
        await pilot.press("enter")
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: picked(pane, "beta"), "beta picked")
        await wait_for(pilot, lambda: len(numbered(list(log.lines), "beta")) >= 3, "beta lines")
        assert not numbered(list(log.lines), "alpha")
        assert text(status).startswith(f"{pane.container}: ")
        assert contiguous(numbered(list(log.lines), "beta"))
        assert not any(sev == "error" for sev, _, _ in app.notices), list(app.notices)

        await pilot.press("escape")  # the log has the focus: back to the fleet
        await wait_for(pilot, lambda: not isinstance(app.screen, DeviceScreen), "back")
        assert pane.active is False
