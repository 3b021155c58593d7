"""A container's log on a device, tailed live, with a search box.

The hub's remote ``devices.logs`` command returns the last N lines and cannot stream, so
"live" is a bounded re-poll: every ``POLL_SECONDS`` while the Logs tab is shown and follow
is on, at most ``MAX_POLLS`` times in a row (then follow pauses until ``f``). Each fresh
tail is merged with what is shown (``tui.models.detail.merge_tail``).
"""

from __future__ import annotations

from typing import Any

from rich.highlighter import Highlighter
from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Input, Log, Select, Static

from tui.client import ApiError
from tui.models import detail as dm
from tui.widgets.base import hub_app, job

POLL_SECONDS = 2.0
MAX_POLLS = 600  # 20 minutes of following; then it waits for the operator
TAIL = 200
DEVICE_WAIT = 3  # seconds the hub waits for the device; under the session's request timeout


MATCH_STYLE = Style(reverse=True, bold=True)  # reverse: still visible with NO_COLOR


class MatchHighlighter(Highlighter):
    """Marks every case-insensitive occurrence of the search in a shown line."""

    def __init__(self) -> None:
        self.query = ""

    def highlight(self, text: Text) -> None:
        if self.query:
            text.highlight_words([self.query], MATCH_STYLE, case_sensitive=False)


class SearchInput(Input):
    # Escape must leave the box, not reach the device screen's "back" binding: with the
    # focus here the operator is editing the search, not leaving the device.
    BINDINGS = [Binding("escape", "leave", "Leave search", show=False)]

    def action_leave(self) -> None:
        self.query_ancestor(LogsPane).query_one("#logs-log", Log).focus()


class LogsPane(Widget):
    DEFAULT_CSS = """
    LogsPane { height: 1fr; }
    LogsPane #logs-bar { height: 3; }
    LogsPane #logs-container { width: 40; }
    LogsPane #logs-search { width: 1fr; }
    LogsPane #logs-status { height: 1; color: $text-muted; }
    LogsPane #logs-log { height: 1fr; }
    """

    def __init__(self, device_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.device_id = device_id
        self.lines: list[str] = []
        self.container: str | None = None
        self.names: list[str] = []  # the picker's choices
        self.follow = True
        self.active = False  # the Logs tab is shown
        self.polls = 0  # in a row, since follow was last (re)started
        self.fetches = 0  # finished fetches; lets tests wait on a condition
        self.switches = 0  # times the log was emptied for another (or no) container
        self.error: str | None = None
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="logs-bar"):
            yield Select[str]([], prompt="container", id="logs-container", allow_blank=True)
            yield SearchInput(placeholder="/ search in the log", id="logs-search")
        yield Static("pick a container", id="logs-status")
        log = Log(id="logs-log", max_lines=dm.MAX_LOG_LINES, auto_scroll=True)
        log.highlighter = MatchHighlighter()
        yield log

    def on_mount(self) -> None:
        self._timer = self.set_interval(POLL_SECONDS, self._tick, pause=True)

    def set_containers(self, names: list[str]) -> None:
        """The device's containers, on every load of the device page.

        ``Select.set_options`` blanks the selection and says so, which would empty the log
        and re-fetch it on each reload (every change notice naming the device). So the
        choices are replaced only when they change, without their messages, and the log is
        reset only if the container shown is gone.
        """
        if names == self.names:
            return
        self.names = list(names)
        select: Select[str] = self.query_one("#logs-container", Select)
        if self.container in names:
            keep: str | None = self.container
        else:
            keep = names[0] if self.container is None and names else None
        with select.prevent(Select.Changed):
            select.set_options([(n, n) for n in names])
            if keep is not None:
                select.value = keep
        self._pick(keep)

    def show(self, active: bool) -> None:
        """The Logs tab was shown (start following) or left (stop: no polls in the dark)."""
        self.active = active
        if self._timer is None:
            return
        if active and self.follow and self.container:
            self.polls = 0
            self._timer.resume()
            self.fetch()
        else:
            self._timer.pause()

    def toggle_follow(self) -> None:
        self.follow = not self.follow
        self.show(self.active)
        self._status()

    def search(self) -> None:
        self.query_one("#logs-search", Input).focus()

    @on(Select.Changed, "#logs-container")
    def _picked(self, event: Select.Changed) -> None:
        value = event.value
        self._pick(value if isinstance(value, str) else None)

    def _pick(self, name: str | None) -> None:
        if name != self.container:
            self.container = name
            self.switches += 1
            self.lines = []
            self.error = None  # the last container's failure says nothing about this one
            self.query_one("#logs-log", Log).clear()
            self.show(self.active)
            self._status()

    @on(Input.Changed, "#logs-search")
    def _searched(self) -> None:
        self._render_all()

    def _tick(self) -> None:
        self.polls += 1
        if self.polls > MAX_POLLS and self._timer is not None:
            self._timer.pause()
            self.follow = False
            self._status()
            return
        self.fetch()

    def fetch(self) -> None:
        if self.container:
            # exclusive: a slow device never piles up requests behind it
            self.run_worker(job(self._fetch, self.container), group="logs", exclusive=True)

    async def _fetch(self, container: str) -> None:
        body = {"id": self.device_id, "container": container, "tail": TAIL, "timeout": DEVICE_WAIT}
        try:
            result = await hub_app(self).session.call("devices.logs", body)
        except ApiError as exc:
            # Shown in place, not as a notification: a follow against an offline device
            # would otherwise raise one every poll.
            if container == self.container:
                self.error = f"{exc.code}: {exc}"
        else:
            # A reply for a container no longer picked (the operator switched meanwhile)
            # is dropped, its lines and its verdict both.
            if container == self.container:
                self.error = None
                lines = [str(x) for x in (result.get("result") or {}).get("lines") or []]
                self._append(lines)
        self.fetches += 1
        self._status()

    def _append(self, tail: list[str]) -> None:
        merged = dm.merge_tail(self.lines, tail)
        query = self.query_one("#logs-search", Input).value
        # Usually the merge only appends: write just the new lines. A search, or old lines
        # trimmed off the top, needs a full redraw.
        if not query.strip() and merged[: len(self.lines)] == self.lines:
            fresh = merged[len(self.lines) :]
            self.lines = merged
            if fresh:
                self.query_one("#logs-log", Log).write_lines(fresh)
            return
        self.lines = merged
        self._render_all()

    def _render_all(self) -> None:
        query = self.query_one("#logs-search", Input).value
        log = self.query_one("#logs-log", Log)
        if isinstance(log.highlighter, MatchHighlighter):
            log.highlighter.query = query.strip()
        log.highlight = bool(query.strip())
        log.clear()
        log.write_lines(dm.search_lines(self.lines, query))
        self._status()

    def _status(self) -> None:
        query = self.query_one("#logs-search", Input).value.strip()
        if self.container is None:
            text = "pick a container"
        elif self.error is not None:
            text = self.error
        else:
            shown = len(dm.search_lines(self.lines, query))
            text = f"{self.container}: {len(self.lines)} line(s)"
            if query:
                text += f", {shown} matching {query!r}"
        follow = "following (f: stop)" if self.follow else "paused (f: follow)"
        self.query_one("#logs-status", Static).update(Content(f"{text} · {follow}"))
