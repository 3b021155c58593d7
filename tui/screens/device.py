"""Device detail: Overview (facts, reported state, metric sparklines over 1 h / 24 h / 7 d),
Containers, Events (paged), Logs (live tail with search) and Journal (why the last
reconcile did what it did, and why the device is stuck if it is)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import Screen
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

from protocol.api import device_wait
from tui.dialogs import ConfirmScreen
from tui.models import common as model
from tui.models import confirm as cm
from tui.models import detail as dm
from tui.models import journal as jm
from tui.widgets.banner import HubBanner
from tui.widgets.base import HubView, call, hub_app, job, show_rows
from tui.widgets.logs import LogsPane

EVENTS_PAGE = 15
METRICS_SHOWN = 6  # sparklines; more would not fit a 24-line terminal anyway
# Change kinds that can touch one device's page; others (bundles pushed, keys) cannot.
KINDS = frozenset({"devices", "reported", "desired", "assignments", "groups", "rollouts"})
TABS = {
    "overview": "device-overview",
    "containers": "device-containers-pane",
    "events": "device-events-pane",
    "logs": "device-logs-pane",
    "journal": "device-journal-pane",
}


def clock() -> float:
    """Now, for ages and metric windows; snapshot tests replace it with a fixed time."""
    return time.time()


def concerns(doc: Mapping[str, Any] | None, device_id: str) -> bool:
    """Whether a change notice names this device (no list of ids: it may)."""
    if not doc:
        return True
    ids = doc.get("ids", doc.get("devices", doc.get("id", ...)))
    if ids is ... or ids is None:
        return True
    if isinstance(ids, str):
        return ids == device_id
    return isinstance(ids, list) and device_id in ids


class DeviceView(HubView):
    KINDS = KINDS
    DEFAULT_CSS = """
    DeviceView { height: 1fr; }
    DeviceView #device-facts, DeviceView #device-reported { height: auto; }
    DeviceView #device-containers { height: auto; max-height: 6; }
    DeviceView #device-metrics-note { height: 1; margin-top: 1; color: $text-muted; }
    DeviceView #device-metrics { height: auto; }
    DeviceView .metric { height: 1; margin-bottom: 1; }
    DeviceView #device-journal { height: auto; }
    """

    def __init__(self, device_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.device_id = device_id
        self.cursors: list[str | None] = [None]  # cursor of each events page shown so far
        self.next_cursor: str | None = None
        self.window = dm.WINDOWS[0]
        self.device: dict[str, Any] | None = None
        self._sparks: dict[str, tuple[Label, Sparkline]] = {}  # metric name -> its widgets
        self._usage: dict[str, tuple[str, str]] = {}  # service -> (CPU%, memory) text

    def compose(self) -> ComposeResult:
        with TabbedContent(id="device-tabs"):
            with TabPane("Overview", id=TABS["overview"]), VerticalScroll():
                yield Static("loading…", id="device-facts")
                yield Static("", id="device-reported")
                table: DataTable[str] = DataTable(id="device-containers", cursor_type="row")
                table.add_columns("Container", "State", "Health")
                yield table
                yield Static("", id="device-metrics-note")
                yield VerticalScroll(id="device-metrics")
            with TabPane("Containers", id=TABS["containers"]):
                boxes: DataTable[str] = DataTable(id="device-container-detail", cursor_type="row")
                for label in dm.CONTAINER_COLUMNS:
                    boxes.add_column(label, key=label.lower())
                yield boxes
            with TabPane("Events", id=TABS["events"]):
                events: DataTable[str] = DataTable(id="device-events", cursor_type="row")
                events.add_columns("Time (UTC)", "Kind", "Message")
                yield events
                yield Static("", id="device-events-page")
            with TabPane("Logs", id=TABS["logs"]):
                yield LogsPane(self.device_id, id="device-logs")
            with TabPane("Journal", id=TABS["journal"]), VerticalScroll():
                yield Static("loading…", id="device-journal")

    def hub_notice(self, doc: Mapping[str, Any]) -> None:
        # A notice naming other devices only is not ours.
        if concerns(doc, self.device_id):
            self.hub_changed(str(doc.get("kind", "")))

    def hub_changed(self, kind: str) -> None:
        # Only the first events page follows live changes; an operator paging back keeps
        # their place.
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

    def cycle_window(self) -> None:
        self.window = dm.next_window(self.window.key)
        self.run_worker(job(self._metrics), group="metrics", exclusive=True)

    async def load(self) -> None:
        device = await call(self, "devices.get", {"id": self.device_id})
        if device is not None:
            self.show_device(device)
        await self._events()
        await self._metrics()

    def show_device(self, d: dict[str, Any]) -> None:
        self.device = d
        now = clock()
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
        facts = Content("\n".join(lines))
        style = dm.state_style(str(d.get("status") or ""))
        if style:
            end = len(str(d.get("id"))) + 2 + len(str(d.get("status")))
            facts = facts.stylize(style, len(str(d.get("id"))) + 2, end)
        self.query_one("#device-facts", Static).update(facts)
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
        # What the hub sends it besides the bundle: gates, budget, and the variables and
        # secrets that reach it with where each comes from (as `signalbeam device show`).
        text += "".join(f"\n{line}" for line in [*dm.gate_lines(d), *dm.setting_lines(d)])
        self.query_one("#device-reported", Static).update(Content(text))
        table: DataTable[str] = self.query_one("#device-containers", DataTable)
        table.clear()
        for c in model.containers(reported):
            table.add_row(str(c.get("name")), str(c.get("state")), str(c.get("health") or "-"))
        self._show_containers()
        self.query_one(LogsPane).set_containers(dm.container_names(reported))
        journal = Content("\n".join(jm.journal_lines(d, now)))
        self.query_one("#device-journal", Static).update(journal)

    def _show_containers(self) -> None:
        """The Containers tab, with the newest CPU% / memory per container (in place)."""
        reported = (self.device or {}).get("reported")
        detail: DataTable[str] = self.query_one("#device-container-detail", DataTable)
        rows = dm.container_rows(reported, self._usage)
        show_rows(detail, [(r[0], r) for r in rows], key_column="container")

    async def _events(self) -> None:
        body: dict[str, Any] = {"device": self.device_id, "limit": EVENTS_PAGE}
        if self.cursors[-1] is not None:
            body["cursor"] = self.cursors[-1]
        result = await call(self, "events.list", body)
        if result is None:
            return
        self.show_events(result)

    def show_events(self, result: dict[str, Any]) -> None:
        self.next_cursor = result.get("next_cursor")
        table: DataTable[str] = self.query_one("#device-events", DataTable)
        table.clear()
        for e in result.get("items", []):
            table.add_row(*dm.event_row(e))
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
        win = self.window
        body = dm.metrics_request(self.device_id, win, clock())
        result = await call(self, "metrics.get", body)
        if result is None:
            return
        self.show_metrics(dm.metric_series(result.get("items", [])))

    def show_metrics(self, series: dict[str, list[float]]) -> None:
        """One label and sparkline per metric, updated in place by name. Nothing here awaits
        the DOM: a reload cancelling this worker must never interrupt a mount or removal
        (that cancellation would reach Textual's message loop and end the app)."""
        win = self.window
        others = " / ".join(w.key for w in dm.WINDOWS if w != win)
        note = f"metrics over {win.key} ({win.resolution} averages) · t: {others}"
        if not series:
            note = f"no metrics in the last {win.key} · t: {others}"
        self.query_one("#device-metrics-note", Static).update(Content(note))
        box = self.query_one("#device-metrics", VerticalScroll)
        usage = dm.container_usage(series)
        if usage != self._usage:
            self._usage = usage
            if self.device is not None:
                self._show_containers()
        names = dm.host_first(series)[:METRICS_SHOWN]
        for name in [n for n in self._sparks if n not in names]:
            label, spark = self._sparks.pop(name)
            label.remove()
            spark.remove()
        for name in names:
            values = series[name]
            text = Content(dm.metric_label(name, values))
            if name in self._sparks:
                label, spark = self._sparks[name]
                label.update(text)
                spark.data = values
            else:
                label = Label(text)
                spark = Sparkline(values, summary_function=max, classes="metric")
                self._sparks[name] = (label, spark)
                box.mount(label, spark)


class DeviceScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("o", "tab('overview')", "Overview"),
        Binding("c", "tab('containers')", "Containers"),
        Binding("e", "tab('events')", "Events"),
        Binding("l", "tab('logs')", "Logs"),
        Binding("w", "tab('journal')", "Why (journal)"),
        Binding("m", "tab('overview')", "Metrics", show=False),
        Binding("t", "window", "1h/24h/7d", show=False),
        Binding("n", "page('older')", "Older", show=False),
        Binding("p", "page('newer')", "Newer", show=False),
        Binding("slash", "search", "Search log", show=False),
        Binding("f", "follow", "Follow log", show=False),
        Binding("R", "restart", "Restart"),
        Binding("g", "reconcile", "Reconcile", show=False),
        Binding("D", "decommission", "Decommission", show=False),
        Binding("j", "cursor('down')", "Down", show=False),
        Binding("k", "cursor('up')", "Up", show=False),
        Binding("ctrl+r", "reload", "Refresh", show=False),
    ]

    def __init__(self, device_id: str, tab: str = "overview") -> None:
        super().__init__()
        self.device_id = device_id
        self.first_tab = tab  # `l` on a fleet row opens the Logs tab

    def compose(self) -> ComposeResult:
        yield Header()
        yield HubBanner(id="hub-banner")  # the app updates every screen's banner
        yield DeviceView(self.device_id, id="device-view")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"device {self.device_id}"
        show_banner = getattr(self.app, "show_banner", None)
        if callable(show_banner):
            show_banner()  # at once, not at the app's next tick
        self.query_one(DeviceView).reload()
        if self.first_tab != "overview":
            self.action_tab(self.first_tab)

    @property
    def view(self) -> DeviceView:
        return self.query_one(DeviceView)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        read_only = bool(getattr(hub_app(self), "read_only", False))
        return cm.write_allowed(action, read_only)

    def action_back(self) -> None:
        self.query_one(LogsPane).show(False)
        self.app.pop_screen()

    def action_tab(self, name: str) -> None:
        self.query_one("#device-tabs", TabbedContent).active = TABS[name]

    @on(TabbedContent.TabActivated, "#device-tabs")
    def _tab_shown(self, event: TabbedContent.TabActivated) -> None:
        self.query_one(LogsPane).show(event.pane.id == TABS["logs"])

    def action_window(self) -> None:
        self.action_tab("overview")
        self.view.cycle_window()

    def action_page(self, direction: str) -> None:
        """Page the events (and show them, so the key always does something visible)."""
        self.action_tab("events")
        self.view.older() if direction == "older" else self.view.newer()

    def action_search(self) -> None:
        self.action_tab("logs")
        self.query_one(LogsPane).search()

    def action_follow(self) -> None:
        self.action_tab("logs")
        self.query_one(LogsPane).toggle_follow()

    def action_cursor(self, direction: str) -> None:
        target = self.focused
        action = getattr(target, f"action_cursor_{direction}", None)
        if action is None:
            action = getattr(target, f"action_scroll_{direction}", None)
        if callable(action):
            action()

    def action_reload(self) -> None:
        self.view.reload()

    # --- write actions, each after a confirmation naming what it touches ----------------
    def _container(self) -> str | None:
        """The container the operator means: the highlighted row of the Containers tab,
        or the one the Logs tab shows, or the only one."""
        tabs = self.query_one("#device-tabs", TabbedContent)
        logs = self.query_one(LogsPane)
        if tabs.active == TABS["logs"] and logs.container:
            return logs.container
        table: DataTable[str] = self.query_one("#device-container-detail", DataTable)
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            return str(key) if key else None
        return None

    def action_restart(self) -> None:
        container = self._container()
        if container is None:
            self.notify("no container to restart", title="restart", severity="warning")
            return
        question = f"Restart container {container} on {self.device_id} — 1 device?"
        self._confirm(question, "devices.restart", {"container": container}, "restarted")

    def action_reconcile(self) -> None:
        question = f"Make {self.device_id} reconcile now — 1 device?"
        self._confirm(question, "devices.reconcile", {}, "reconcile triggered")

    def action_decommission(self) -> None:
        question = (
            f"Decommission {self.device_id} — 1 device? Its NATS user is revoked; it may "
            "enroll again only with a new token."
        )
        self._confirm(question, "devices.decommission", {}, "decommissioned", wait=False)

    def _confirm(
        self, question: str, verb: str, body: dict[str, Any], done: str, wait: bool = True
    ) -> None:
        # How long the hub waits for the device: a restart's wait covers the container's stop
        # timeout (protocol.api.device_wait); the client waits for the hub's answer.
        full = {"id": self.device_id, **body, **({"timeout": device_wait(verb)} if wait else {})}

        async def run() -> None:
            if await call(self.view, verb, full) is not None:
                self.notify(f"{self.device_id}: {done}", title=verb, markup=False)
                self.view.reload()

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(job(run), group="write")

        self.app.push_screen(ConfirmScreen(question), answered)
