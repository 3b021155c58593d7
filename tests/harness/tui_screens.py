"""Shared by the screens' snapshot tests (no tests here): an app that holds the Bundles,
Assign and Rollouts views and opens the device screen, over a real hub session.

It is the real views and screens inside a small shell of their own, so the snapshots do not
change with the main screen's layout; the end-to-end Pilot tests (test_tui_screens.py) run
the real ``SignalBeamApp``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.widgets import Footer, Header, TabbedContent, TabPane

from tui.app import SignalBeamApp
from tui.hub.session import HubSession
from tui.screens.device import DeviceScreen
from tui.widgets.assign import AssignView
from tui.widgets.base import HubView, job
from tui.widgets.bundles import BundlesView
from tui.widgets.rollouts import RolloutsView

FOCUS = {"bundles": "#bundles-table", "assign": "#assign-target", "rollouts": "#rollouts-list"}


class ScreensApp(App[None]):
    CSS_PATH = SignalBeamApp.CSS_PATH
    BINDINGS = [
        Binding("b", "tab('bundles')", "Bundles"),
        Binding("a", "tab('assign')", "Assign"),
        Binding("r", "tab('rollouts')", "Rollouts"),
    ]

    def __init__(self, session: HubSession, read_only: bool = False) -> None:
        super().__init__()
        self.session = session
        self.read_only = read_only
        self.notices: deque[tuple[str, str, str]] = deque(maxlen=100)

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="rollouts", id="tabs"):
            with TabPane("Bundles", id="bundles"):
                yield BundlesView(id="bundles-view")
            with TabPane("Assign", id="assign"):
                yield AssignView(id="assign-view")
            with TabPane("Rollouts", id="rollouts"):
                yield RolloutsView(id="rollouts-view")
        yield Footer()

    def on_mount(self) -> None:
        self.run_worker(job(self._start), group="connect")

    async def _start(self) -> None:
        await self.session.open()
        await self.session.watch(self._notice)
        for view in self.query(HubView):
            view.reload()
        self.query_one("#rollouts-view").focus()

    async def _notice(self, doc: dict[str, Any]) -> None:
        for screen in self.screen_stack:
            for view in screen.query(HubView):
                view.hub_notice(doc) if hasattr(view, "hub_notice") else view.hub_changed(
                    str(doc.get("kind", ""))
                )

    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        self.query_one(FOCUS[tab]).focus()

    def open_device(self, device_id: str) -> None:
        self.push_screen(DeviceScreen(device_id))

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        self.notices.append((severity, title, message))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def report_error(self, title: str, message: str) -> None:
        self.notify(message, title=title, severity="error", timeout=8, markup=False)

    async def on_unmount(self) -> None:
        await self.session.close()
