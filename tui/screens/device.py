"""Device detail: facts, reported state "as of", containers, paged events, metric sparklines."""

from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import (
    DataTable,
    Footer,
    Header,
    Label,
    Sparkline,
    Static,
    TabbedContent,
    TabPane,
)

from tui.screens import model
from tui.widgets.base import HubView, call, job

EVENTS_PAGE = 15
METRICS_WINDOW = 3600  # seconds of 1-minute rollups to draw
METRICS_SHOWN = 6  # sparklines; more would not fit a 24-line terminal anyway


class DeviceView(HubView):
    IGNORED = frozenset({"bundles", "tokens", "keys"})

    def __init__(self, device_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.device_id = device_id
        self.cursors: list[str | None] = [None]  # cursor of each events page shown so far
        self.next_cursor: str | None = None

    def compose(self) -> ComposeResult:
        with TabbedContent(id="device-tabs"):
            with TabPane("Overview", id="device-overview"), VerticalScroll():
                yield Static("loading…", id="device-facts")
                yield Static("", id="device-reported")
                table: DataTable[str] = DataTable(id="device-containers", cursor_type="row")
                table.add_columns("Container", "State", "Health")
                yield table
            with TabPane("Events", id="device-events-pane"):
                events: DataTable[str] = DataTable(id="device-events", cursor_type="row")
                events.add_columns("Time (UTC)", "Kind", "Message")
                yield events
                yield Static("", id="device-events-page")
            with TabPane("Metrics", id="device-metrics-pane"), VerticalScroll(id="device-metrics"):
                yield Static("loading…", id="device-metrics-note")

    def hub_changed(self, kind: str) -> None:
        # Only the first page follows live changes; an operator paging back keeps their place.
        if len(self.cursors) == 1:
            super().hub_changed(kind)

    def older(self) -> None:
        if self.next_cursor is not None:
            self.cursors.append(self.next_cursor)
            self.next_cursor = None  # a second n before the page arrives must not skip one
            self.run_worker(job(self._events), group="events", exclusive=True)

    def newer(self) -> None:
        if len(self.cursors) > 1:
            self.cursors.pop()
            self.run_worker(job(self._events), group="events", exclusive=True)

    async def load(self) -> None:
        device = await call(self, "devices.get", {"id": self.device_id})
        if device is not None:
            self._facts(device)
        await self._events()
        await self._metrics()

    def _facts(self, d: dict[str, Any]) -> None:
        now = time.time()
        desired = d.get("desired") or {}
        lines = [
            f"{d.get('id')}  {d.get('status')} (last seen {model.ago(d.get('last_seen'), now)})",
            f"host {d.get('hostname') or '-'} · {d.get('os') or '-'}/{d.get('arch') or '-'} · "
            f"engine {d.get('engine') or '-'} · agent {d.get('agent_version') or '-'}",
            f"tenant {d.get('tenant')} · tags {','.join(d.get('tags') or []) or '-'} · "
            f"groups {','.join(d.get('groups') or []) or '-'}",
            f"desired {model.desired_ref(d) or 'nothing'}"
            + (f" (via {desired.get('via')})" if desired.get("via") else ""),
        ]
        self.query_one("#device-facts", Static).update(Content("\n".join(lines)))
        reported = d.get("reported")
        if reported is None:
            text = "reported: nothing yet (the device has not synced)"
        else:
            text = (
                f"running {model.running_ref(reported) or 'nothing'} · health "
                f"{model.health(reported)} · as of {model.ago(reported.get('as_of'), now)} "
                f"({reported.get('as_of')})"
            )
            why = model.problem(reported)
            if why is not None:
                text += f"\nproblem: {why}"
        self.query_one("#device-reported", Static).update(Content(text))
        table: DataTable[str] = self.query_one("#device-containers", DataTable)
        table.clear()
        for c in model.containers(reported):
            table.add_row(str(c.get("name")), str(c.get("state")), str(c.get("health") or "-"))

    async def _events(self) -> None:
        body: dict[str, Any] = {"device": self.device_id, "limit": EVENTS_PAGE}
        if self.cursors[-1] is not None:
            body["cursor"] = self.cursors[-1]
        result = await call(self, "events.list", body)
        if result is None:
            return
        self.next_cursor = result.get("next_cursor")
        table: DataTable[str] = self.query_one("#device-events", DataTable)
        table.clear()
        for e in result.get("items", []):
            ts = str(e.get("ts", ""))[:19].replace("T", " ")
            table.add_row(ts, str(e.get("kind")), str(e.get("message") or ""))
        page = len(self.cursors)
        hint = []
        if self.next_cursor is not None:
            hint.append("n: older")
        if page > 1:
            hint.append("p: newer")
        note = f"page {page}" + (f" · {' · '.join(hint)}" if hint else "")
        if not result.get("items"):
            note = "no events"
        self.query_one("#device-events-page", Static).update(Content(note))

    async def _metrics(self) -> None:
        since = int(time.time()) - METRICS_WINDOW
        result = await call(
            self, "metrics.get", {"device": self.device_id, "resolution": "1m", "since": since}
        )
        if result is None:
            return
        series: dict[str, list[float]] = {}
        for m in result.get("items", []):
            series.setdefault(str(m.get("name")), []).append(float(m.get("avg") or 0.0))
        box = self.query_one("#device-metrics", VerticalScroll)
        await box.remove_children()
        if not series:
            await box.mount(Static("no metrics in the last hour", id="device-metrics-note"))
            return
        widgets: list[Widget] = []
        for name in sorted(series)[:METRICS_SHOWN]:
            values = series[name]
            widgets.append(Label(Content(f"{name}  last {values[-1]:.1f}  max {max(values):.1f}")))
            widgets.append(Sparkline(values, summary_function=max, classes="metric"))
        await box.mount_all(widgets)


class DeviceScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("o", "tab('device-overview')", "Overview"),
        Binding("e", "tab('device-events-pane')", "Events"),
        Binding("m", "tab('device-metrics-pane')", "Metrics"),
        Binding("n", "page('older')", "Older"),
        Binding("p", "page('newer')", "Newer"),
        Binding("ctrl+r", "reload", "Refresh"),
    ]

    def __init__(self, device_id: str) -> None:
        super().__init__()
        self.device_id = device_id

    def compose(self) -> ComposeResult:
        yield Header()
        yield DeviceView(self.device_id, id="device-view")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"device {self.device_id}"
        self.query_one(DeviceView).reload()

    def action_tab(self, pane: str) -> None:
        self.query_one("#device-tabs", TabbedContent).active = pane

    def action_page(self, direction: str) -> None:
        """Page the events (and show them, so the key always does something visible)."""
        self.action_tab("device-events-pane")
        view = self.query_one(DeviceView)
        view.older() if direction == "older" else view.newer()

    def action_reload(self) -> None:
        self.query_one(DeviceView).reload()

    def hub_changed(self, kind: str) -> None:
        self.query_one(DeviceView).hub_changed(kind)
