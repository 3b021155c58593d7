"""``signalbeam tui``: the Textual operator UI. It talks to the hub over NATS only.

Entry points: ``main(args)`` (what ``tui/cli.py``'s ``tui`` verb calls), ``run_tui(...)``,
and ``add_tui_command(subparsers)`` for a parser that has no ``tui`` verb yet.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.timer import Timer

from protocol import errors as codes
from tui.client import ApiError
from tui.commands import COMMANDS, TABS, Command, help_lines, key_label
from tui.config import ConfigError, from_args
from tui.dialogs import HelpScreen, HubErrorScreen
from tui.errors import EXIT_CRASH, EXIT_HUB, EXIT_OK
from tui.hub.session import HubSession
from tui.palette import SignalBeamCommands
from tui.screens.device import DeviceScreen
from tui.screens.main import MainScreen
from tui.widgets.banner import HubBanner, banner_text
from tui.widgets.base import HubView, job
from tui.widgets.fleet import FleetView

POLL_SECONDS = 30.0  # fallback refresh: change notices can be missed (they are core NATS)
ERROR_REPEAT_SECONDS = 15.0  # the same error again within this shows no second notification
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0)  # first-connect retries back off to the last, forever
READ_ONLY_HELP = "browse only: write actions are hidden (also automatic with a readonly key)"

HINTS = {
    codes.UNAVAILABLE: "Is `signalbeam-hub run` up? Check --hub / $SIGNALBEAM_HUB "
    "(e.g. nats://operator:PASSWORD@HOST:4222, printed by `signalbeam-hub init`).",
    codes.UNAUTHORIZED: "Check --api-key / $SIGNALBEAM_API_KEY; `signalbeam-hub init` prints "
    "the first admin key, `signalbeam api-key create` makes more.",
}


class SignalBeamApp(App[int]):
    # Absolute, so apps in tests that borrow the layout find it too. Wheels need
    # tui/*.tcss in [tool.setuptools.package-data].
    CSS_PATH = str(Path(__file__).with_name("tui.tcss"))
    TITLE = "SignalBeam Edge"
    COMMANDS = App.COMMANDS | {SignalBeamCommands}
    BINDINGS = [
        # Every key where the focus is, including those the footer has no room for.
        Binding("question_mark", "toggle_keys", "Help", key_display="?"),
        # vi keys in every table (text boxes take the letters first).
        Binding("j", "cursor('down')", "Down", show=False),
        Binding("k", "cursor('up')", "Up", show=False),
    ]

    def __init__(
        self,
        session: HubSession,
        poll_seconds: float = POLL_SECONDS,
        *,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.session = session
        self.poll_seconds = poll_seconds
        self.clock = clock  # wall time for ages ("offline 4m"); fixed in snapshot tests
        self.forced_read_only = read_only  # --read-only
        self.role: str | None = None  # the key's role from session.whoami
        self.key_name: str | None = None  # the key's name from session.whoami
        self.hub_version: str | None = None  # from session.whoami
        self.ready = False  # connected and the views started loading
        self.ever_connected = False
        self.down_since: float | None = None  # wall time the hub became unreachable
        self.down_reason = ""
        self.data_at: float | None = None  # wall time of the last data known fresh
        self._attempts = 0
        self._poll: Timer | None = None
        self._last_error: tuple[str, float] = ("", 0.0)
        # Every notification shown, newest last (bounded): the record tests assert on.
        self.notices: deque[tuple[str, str, str]] = deque(maxlen=100)
        self.quit_requested = False  # set by every deliberate exit; anything else is a crash
        self.crash: str | None = None  # why the app's message loop ended on its own

    @property
    def read_only(self) -> bool:
        """Write actions are hidden or greyed: ``--read-only`` or a readonly API key."""
        return self.forced_read_only or self.role == "readonly"

    def on_mount(self) -> None:
        self.sub_title = self._status("connecting…")
        self.push_screen(MainScreen())
        self.set_interval(1.0, self.show_banner)
        self.run_worker(job(self._start), group="connect", exclusive=True)

    def _status(self, link: str) -> str:
        """The header's second line: hub, link, key role, hub version (k9s' context line)."""
        parts = [self.session.display_url]
        if self.hub_version is not None:
            parts.append(f"hub {self.hub_version}")
        if self.role is not None:
            parts.append(f"key {self.key_name} ({self.role})" if self.key_name else self.role)
        parts.append(link)
        if self.read_only:
            parts.append("read-only")
        return " · ".join(parts)

    async def _start(self) -> None:
        try:
            await self.session.open()
        except ApiError as exc:
            if exc.code == codes.UNAVAILABLE:
                self._unreachable_at_start(exc)
            else:
                self._hub_error(exc)
            return
        self._attempts = 0
        self.ever_connected = True
        self.down_since = None
        self.session.on_link = self._link
        await self.session.watch(self._notice)
        await self._whoami()
        self.sub_title = self._status("connected")
        if self._poll is None:
            self._poll = self.set_interval(self.poll_seconds, self._poll_tick)
        self.ready = True
        self.show_banner()
        self.action_reload_all()

    def _unreachable_at_start(self, exc: ApiError) -> None:
        """No hub at start: the banner says so and the connect is retried in the background;
        the operator can still quit (a refused key gets the error screen instead)."""
        wait = RETRY_SECONDS[min(self._attempts, len(RETRY_SECONDS) - 1)]
        self._attempts += 1
        if self.down_since is None:
            self.down_since = self.clock()
        self.down_reason = f"{exc} (attempt {self._attempts}; next in {wait:g}s)"
        self.sub_title = self._status("not connected")
        self.show_banner()
        self.set_timer(
            wait, lambda: self.run_worker(job(self._start), group="connect", exclusive=True)
        )

    async def _whoami(self) -> None:
        try:
            me = await self.session.call("session.whoami")
        except ApiError:
            return  # an older hub without the verb: only --read-only applies
        role, name, version = me.get("role"), me.get("name"), me.get("hub_version")
        before = self.read_only
        self.role = role if isinstance(role, str) else None
        self.key_name = name if isinstance(name, str) and name else None
        self.hub_version = version if isinstance(version, str) else None
        if self.read_only != before:
            self._read_only_changed()

    def _read_only_changed(self) -> None:
        self.sub_title = self._status("connected" if self.session.connected else "connecting…")
        for screen in self.screen_stack:
            screen.refresh_bindings()

    def _hub_error(self, exc: ApiError) -> None:
        self.sub_title = self._status("not connected")
        if exc.code == codes.UNAUTHORIZED:
            title = "The hub refused the API key"
        elif exc.code == codes.UNAVAILABLE:
            title = "Cannot reach the hub"
        else:
            title = f"The hub answered with an error ({exc.code})"
        hint = HINTS.get(exc.code, "")

        def chosen(choice: str | None) -> None:
            if choice == "retry":
                self.sub_title = self._status("connecting…")
                self.run_worker(job(self._start), group="connect", exclusive=True)
            else:
                self.quit_requested = True
                self.exit(EXIT_HUB, return_code=EXIT_HUB)

        self.push_screen(HubErrorScreen(title, str(exc), hint), chosen)

    async def _notice(self, doc: dict[str, Any]) -> None:
        for screen in self.screen_stack:
            for view in screen.query(HubView):
                view.hub_notice(doc)

    async def _link(self, up: bool) -> None:
        if up:
            self.down_since = None
            self.sub_title = self._status("connected")
            self.notify("connection to the hub is back", title="hub")
            self.action_reload_all()  # notices sent while the link was down are lost
        else:
            self.down_since = self.data_at = self.clock()
            self.down_reason = "hub unreachable"
            self.sub_title = self._status("reconnecting…")
            self.notify(
                "lost the connection to the hub; reconnecting", title="hub", severity="warning"
            )
        self.show_banner()

    def show_banner(self) -> None:
        """Every banner on the open screens: shown with its ages while the hub is away."""
        text = None
        if self.down_since is not None:
            if self.ever_connected:
                text = banner_text("hub unreachable", self.down_since, self.data_at, self.clock())
            else:
                text = f"⚠ {self.down_reason} · retrying in the background · q quits"
        for screen in self.screen_stack:
            for banner in screen.query(HubBanner):
                if text is None:
                    banner.clear_problem()
                else:
                    banner.show_problem(text)

    def action_toggle_keys(self) -> None:
        """``?``: every key grouped by view (``?`` or Esc closes it)."""
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
        else:
            self.push_screen(HelpScreen(help_text()))

    def action_cursor(self, direction: str) -> None:
        """j / k: the focused table's cursor (a widget without one ignores them)."""
        move = getattr(self.focused, f"action_cursor_{direction}", None)
        if callable(move):
            move()

    def run_command(self, command: Command) -> None:
        """A `:` command or a palette entry."""
        if command.name == "quit":
            self.action_quit_app()
        elif command.name == "help":
            self.action_toggle_keys()
        elif command.name == "device" and command.arg:
            self.push_screen(DeviceScreen(command.arg))
        elif command.name in TABS:
            while len(self.screen_stack) > 2 and not isinstance(self.screen, MainScreen):
                self.pop_screen()  # back from a device to the tabs
            if isinstance(self.screen, MainScreen):
                self.screen.action_show_tab(command.name)

    def device_ids(self) -> list[str]:
        for screen in self.screen_stack:
            for view in screen.query(FleetView):
                return view.device_ids()
        return []

    async def action_quit(self) -> None:
        self.action_quit_app()

    def action_quit_app(self) -> None:
        # Never having reached the hub is a failed run, as from the error screen.
        self.quit_requested = True
        self.exit(EXIT_OK if self.ever_connected else EXIT_HUB)

    async def _dispatch_message(self, message: Message) -> None:
        """Textual ends the app's message loop quietly when a handler lets a CancelledError
        out (it is not an Exception); remember what was being handled, so the end is
        reported instead of looking like a normal quit."""
        try:
            await super()._dispatch_message(message)
        except asyncio.CancelledError:
            if not self.quit_requested and self.crash is None:
                self.crash = f"a task was cancelled while handling {type(message).__name__}"
            raise

    def unexpected_end(self) -> str | None:
        """Why the app ended although nobody asked it to, or None after a deliberate exit.
        (An exception in a handler is printed by Textual itself, with its traceback.)"""
        if self.quit_requested:
            return None
        if self.return_code not in (None, 0):
            return f"stopped by an internal error (exit code {self.return_code}; see above)"
        return self.crash or "the app's message loop ended without a quit"

    def _poll_tick(self) -> None:
        if self.session.connected:
            self.action_reload_all()

    def action_reload_all(self) -> None:
        if not self.ready:
            return
        self.data_at = self.clock()
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
        self.push_screen(DeviceScreen(message.device_id, message.tab))

    async def on_unmount(self) -> None:
        await self.session.close()


def help_text() -> list[str]:
    """The ``?`` help: each view's keys, from the bindings themselves (plus the `:`
    commands), so it never disagrees with what the keys do."""
    from tui.widgets.assign import AssignView
    from tui.widgets.bundles import BundlesView
    from tui.widgets.logs import LogsPane
    from tui.widgets.rollouts import RolloutsView

    def keys(*owners: Any) -> list[tuple[str, str]]:
        out = []
        for owner in owners:
            for b in owner.BINDINGS:
                if isinstance(b, Binding):
                    out.append((key_label(b.key, b.key_display), b.description))
        return out

    extra = [("ctrl+p", "command palette: every : command and any device by id")]
    return help_lines(
        [
            ("Everywhere", keys(SignalBeamApp) + extra),
            ("Main screen (tabs)", keys(MainScreen)),
            ("Fleet", [*keys(FleetView), ("enter", "open the highlighted device")]),
            ("Bundles", keys(BundlesView)),
            ("Assign", [*keys(AssignView), ("enter", "in the target box: count, confirm")]),
            ("Rollouts", keys(RolloutsView)),
            ("Device", keys(DeviceScreen, LogsPane)),
            (":commands", [(f":{c}", d) for c, d in COMMANDS]),
        ]
    )


def run_tui(
    hub_url: str,
    api_key: str | None,
    timeout: float = 5.0,
    *,
    read_only: bool = False,
    ca_file: str | None = None,
) -> int:
    """Run the TUI until the operator quits; the exit code (1 when the hub was unusable)."""
    app = SignalBeamApp(HubSession(hub_url, api_key, timeout, ca_file), read_only=read_only)
    return run_app(app)


def run_app(app: SignalBeamApp, *, headless: bool = False) -> int:
    """Run ``app``; its exit code. An end nobody asked for (a crash, or Textual's message
    loop stopping on a stray cancellation) says why on stderr and is never exit 0."""
    result = app.run(headless=headless)
    why = app.unexpected_end()
    if why is not None:
        print(f"signalbeam tui: the TUI ended unexpectedly: {why}", file=sys.stderr)
        return app.return_code if app.return_code not in (None, 0) else EXIT_CRASH
    return EXIT_OK if result is None else int(result)


def main(args: argparse.Namespace) -> int:
    """``signalbeam tui``: hub and key from flags, environment or config file, as the CLI."""
    try:
        settings = from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return run_tui(
        settings.hub,
        settings.api_key,
        settings.timeout,
        read_only=bool(getattr(args, "read_only", False)),
        ca_file=settings.ca_file,
    )


def add_tui_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``tui`` to a parser's subcommands; the parsed args go to ``main``."""
    p: argparse.ArgumentParser = subparsers.add_parser("tui", help="the interactive terminal UI")
    p.add_argument(
        "--hub",
        default=argparse.SUPPRESS,
        help="hub NATS URL, or several comma-separated: a cluster's nodes ($SIGNALBEAM_HUB)",
    )
    p.add_argument("--api-key", default=argparse.SUPPRESS, help="API key ($SIGNALBEAM_API_KEY)")
    p.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help="seconds per request")
    p.add_argument(
        "--ca-file", default=argparse.SUPPRESS, help="TLS hub's CA ($SIGNALBEAM_CA_FILE)"
    )
    p.add_argument("--read-only", action="store_true", help=READ_ONLY_HELP)
    p.set_defaults(tui_main=main)
    return p
