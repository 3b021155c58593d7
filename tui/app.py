"""``signalbeam tui``: the Textual operator UI. It talks to the hub over NATS only.

Entry points: ``main(args)`` (what ``tui/cli.py``'s ``tui`` verb calls), ``run_tui(...)``,
and ``add_tui_command(subparsers)`` for a parser that has no ``tui`` verb yet.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.timer import Timer
from textual.widgets import HelpPanel

from protocol import errors as codes
from tui.client import ApiError
from tui.config import ConfigError, resolve
from tui.screens.device import DeviceScreen
from tui.screens.dialogs import HubErrorScreen
from tui.screens.main import MainScreen
from tui.screens.session import HubSession
from tui.widgets.base import HubView, job
from tui.widgets.fleet import FleetView

POLL_SECONDS = 30.0  # fallback refresh: change notices can be missed (they are core NATS)
ERROR_REPEAT_SECONDS = 15.0  # the same error again within this shows no second notification
EXIT_OK, EXIT_HUB, EXIT_USAGE = 0, 1, 2

HINTS = {
    codes.UNAVAILABLE: "Is `signalbeam-hub run` up? Check --hub / $SIGNALBEAM_HUB "
    "(e.g. nats://operator:PASSWORD@HOST:4222, printed by `signalbeam-hub init`).",
    codes.UNAUTHORIZED: "Check --api-key / $SIGNALBEAM_API_KEY; `signalbeam-hub init` prints "
    "the first admin key, `signalbeam key create` makes more.",
}


class SignalBeamApp(App[int]):
    # Absolute, so apps in tests that borrow the layout find it too. Wheels need
    # tui/*.tcss in [tool.setuptools.package-data].
    CSS_PATH = str(Path(__file__).with_name("tui.tcss"))
    TITLE = "SignalBeam Edge"
    # The palette's footer entry would crowd out the real keys in 80 columns.
    ENABLE_COMMAND_PALETTE = False
    # Every key where the focus is, including those the footer has no room for.
    BINDINGS = [Binding("question_mark", "toggle_keys", "Keys")]

    def __init__(self, session: HubSession, poll_seconds: float = POLL_SECONDS) -> None:
        super().__init__()
        self.session = session
        self.poll_seconds = poll_seconds
        self.ready = False  # connected and the views started loading
        self._poll: Timer | None = None
        self._last_error: tuple[str, float] = ("", 0.0)
        # Every notification shown, newest last (bounded): the record tests assert on.
        self.notices: deque[tuple[str, str, str]] = deque(maxlen=100)

    def on_mount(self) -> None:
        self.sub_title = f"{self.session.display_url} · connecting…"
        self.push_screen(MainScreen())
        self.run_worker(job(self._start), group="connect", exclusive=True)

    async def _start(self) -> None:
        try:
            await self.session.open()
        except ApiError as exc:
            self._hub_error(exc)
            return
        self.session.on_link = self._link
        await self.session.watch(self._notice)
        self.sub_title = f"{self.session.display_url} · connected"
        if self._poll is None:
            self._poll = self.set_interval(self.poll_seconds, self._poll_tick)
        self.ready = True
        self.action_reload_all()

    def _hub_error(self, exc: ApiError) -> None:
        self.sub_title = f"{self.session.display_url} · not connected"
        if exc.code == codes.UNAUTHORIZED:
            title = "The hub refused the API key"
        elif exc.code == codes.UNAVAILABLE:
            title = "Cannot reach the hub"
        else:
            title = f"The hub answered with an error ({exc.code})"
        hint = HINTS.get(exc.code, "")

        def chosen(choice: str | None) -> None:
            if choice == "retry":
                self.sub_title = f"{self.session.display_url} · connecting…"
                self.run_worker(job(self._start), group="connect", exclusive=True)
            else:
                self.exit(EXIT_HUB, return_code=EXIT_HUB)

        self.push_screen(HubErrorScreen(title, str(exc), hint), chosen)

    async def _notice(self, doc: dict[str, Any]) -> None:
        kind = str(doc.get("kind", ""))
        for screen in self.screen_stack:
            for view in screen.query(HubView):
                view.hub_changed(kind)

    async def _link(self, up: bool) -> None:
        if up:
            self.sub_title = f"{self.session.display_url} · connected"
            self.notify("connection to the hub is back", title="hub")
            self.action_reload_all()  # notices sent while the link was down are lost
        else:
            self.sub_title = f"{self.session.display_url} · reconnecting…"
            self.notify(
                "lost the connection to the hub; reconnecting", title="hub", severity="warning"
            )

    def action_toggle_keys(self) -> None:
        if self.screen.query(HelpPanel):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def _poll_tick(self) -> None:
        if self.session.connected:
            self.action_reload_all()

    def action_reload_all(self) -> None:
        if not self.ready:
            return
        for screen in self.screen_stack:
            for view in screen.query(HubView):
                view.reload()

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
        last, when = self._last_error
        now = time.monotonic()
        if message == last and now - when < ERROR_REPEAT_SECONDS:
            return  # a poll repeating the same failure would bury the screen in toasts
        self._last_error = (message, now)
        self.notify(message, title=title, severity="error", timeout=8, markup=False)

    def on_fleet_view_open_device(self, message: FleetView.OpenDevice) -> None:
        self.push_screen(DeviceScreen(message.device_id))

    async def on_unmount(self) -> None:
        await self.session.close()


def run_tui(hub_url: str, api_key: str | None, timeout: float = 5.0) -> int:
    """Run the TUI until the operator quits; the exit code (1 when the hub was unusable)."""
    app = SignalBeamApp(HubSession(hub_url, api_key, timeout))
    result = app.run()
    return EXIT_OK if result is None else int(result)


def main(args: argparse.Namespace) -> int:
    """``signalbeam tui``: hub and key from flags, environment or config file, as the CLI."""
    try:
        settings = resolve(
            getattr(args, "hub", None),
            getattr(args, "api_key", None),
            getattr(args, "timeout", None),
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_tui(settings.hub, settings.api_key, settings.timeout)


def add_tui_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``tui`` to a parser's subcommands; the parsed args go to ``main``."""
    p: argparse.ArgumentParser = subparsers.add_parser("tui", help="the interactive terminal UI")
    p.add_argument("--hub", default=argparse.SUPPRESS, help="hub NATS URL ($SIGNALBEAM_HUB)")
    p.add_argument("--api-key", default=argparse.SUPPRESS, help="API key ($SIGNALBEAM_API_KEY)")
    p.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help="seconds per request")
    p.set_defaults(tui_main=main)
    return p
