"""Fleet: the live device table. Rows are kept by device id and updated in place, cell by
cell, as change notices arrive. The pure rules are in ``tui/models/fleet.py``, the hub reads
in ``tui/hub/fleet.py``, the table widget and its styles in ``fleet_table.py``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable, Input, Static

from tui.client import ApiError
from tui.hub.fleet import FleetSource
from tui.models import confirm as cm
from tui.models import fleet as fm
from tui.widgets.base import hub_app, job
from tui.widgets.fleet_actions import FleetActions
from tui.widgets.fleet_table import (
    EMPTY_HELP,
    FLASH_SECONDS,
    FleetTable,
    empty_text,
)

MAX_DEVICES = 20_000  # a sane bound on what one table holds (and one load fetches)
TARGETED_MAX = 32  # a notice naming more devices than this reloads everything (in place)
TARGETED_DELAY = 0.2  # gathers the ids of a burst of notices into one fetch
AGE_SECONDS = 15.0  # how often "offline 4m" ages are redrawn (only the cells that change)


class FleetView(FleetActions):
    # Kinds that never name a device's row content. `assignments` is followed by a `desired`
    # notice with the ids, so it needs no reload of its own.
    IGNORED = frozenset({"bundles", "tokens", "keys", "assignments"})
    RELOAD_DELAY = 2.0  # a full (in-place) reload pages through every device
    BINDINGS = [
        Binding("slash", "focus_filter", "Filter", priority=True),  # see MainScreen's `:`
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("s", "sort_next", "Sort"),
        Binding("S", "sort_reverse", "Reverse", show=False),
        Binding("space", "mark", "Mark", show=False),
        Binding("d", "describe", "Describe"),
        Binding("y", "yaml", "YAML"),
        Binding("l", "logs", "Logs"),
        Binding("g", "fleet_write('reconcile')", "Reconcile", show=False),
        Binding("D", "fleet_write('decommission')", "Decommission", show=False),
        Binding("F", "force_update", "Force update", show=False),
    ]

    class OpenDevice(Message):
        def __init__(self, device_id: str, tab: str = "overview") -> None:
            super().__init__()
            self.device_id = device_id
            self.tab = tab

    def __init__(self, clock: Callable[[], float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clock = clock
        self.filter = fm.DeviceFilter()
        self.filter_error: str | None = None  # the typed filter does not parse: show nothing
        self.sort = fm.Sort()
        self.devices: dict[str, fm.DeviceRow] = {}  # every loaded device, by id
        self.shown: dict[str, tuple[fm.Cell, ...]] = {}  # what the table shows, by id
        # The summary bar's counts over the shown rows, kept per row (counted: the version
        # of each row they include).
        self.counts = fm.summarize(())
        self.counted: dict[str, fm.DeviceRow] = {}
        self.flashing: dict[str, float] = {}  # id -> when its flash ends (monotonic)
        self.marked: set[str] = set()  # space: the rows the fleet actions apply to
        self.more = False  # the hub has more devices than MAX_DEVICES
        self.source = FleetSource()  # what this hub's devices.list turned out to support
        self.loaded_at: float | None = None
        self.updates = 0  # rows updated in place; lets tests wait on a condition
        self._pending: set[str] = set()
        self._targeted_timer = False
        self._flash_timer: Timer | None = None

    def now(self) -> float:
        clock = self.clock or getattr(self.app, "clock", None) or time.time
        return float(clock())

    def compose(self) -> ComposeResult:
        yield Static("loading…", id="fleet-summary")
        yield Input(
            placeholder="filter: tag:NAME group:NAME status:STATE bundle:NAME text; !word negates",
            id="fleet-filter",
        )
        yield FleetTable.with_columns(id="fleet-table")
        yield Static(Content(EMPTY_HELP), id="fleet-empty")

    def on_mount(self) -> None:
        self.query_one("#fleet-empty").display = False
        self.set_interval(AGE_SECONDS, self._tick_ages)

    @property
    def table(self) -> FleetTable:
        return self.query_one("#fleet-table", FleetTable)

    # --- operator actions ------------------------------------------------------------------
    def action_focus_filter(self) -> None:
        # At once (``focus()`` defers): keys typed right after `/` belong to the filter.
        self.screen.set_focus(self.query_one("#fleet-filter", Input))

    def action_sort_next(self) -> None:
        self.set_sort(self.sort.next_column())

    def action_sort_reverse(self) -> None:
        self.set_sort(fm.Sort(self.sort.column, not self.sort.reverse))

    def set_sort(self, sort: fm.Sort) -> None:
        self.sort = sort
        self._resort()
        self._show_summary()

    def set_filter(self, flt: fm.DeviceFilter) -> None:
        reload = flt.wants_decommissioned != self.filter.wants_decommissioned
        self.filter = flt
        self._rebuild()
        if reload:
            self.reload()

    @on(DataTable.HeaderSelected, "#fleet-table")
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.column_key.value:
            self.set_sort(self.sort.by(event.column_key.value))

    @on(DataTable.RowSelected, "#fleet-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.post_message(self.OpenDevice(event.row_key.value))

    @on(Input.Changed, "#fleet-filter")
    def _filter_typed(self, event: Input.Changed) -> None:
        """The filter applies as it is typed (k9s): every keystroke re-filters the loaded
        devices; a filter that does not parse (yet) empties the table and says why, so
        nothing stale is shown as if it matched."""
        try:
            flt = fm.parse_filter(event.value)
        except fm.FilterError as exc:
            if self.filter_error is None:
                self.filter_error = str(exc)
                self._rebuild()
            else:
                self.filter_error = str(exc)
                self._show_summary()
            return
        was_invalid, self.filter_error = self.filter_error is not None, None
        if flt != self.filter or was_invalid:
            self.set_filter(flt)

    @on(Input.Submitted, "#fleet-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if self.filter_error is not None:
            self.notify(self.filter_error, title="filter", severity="error", markup=False)
            return
        self.screen.set_focus(self.table)

    def action_clear_filter(self) -> None:
        """Esc: the filter box emptied (the whole fleet again) and the table focused."""
        box = self.query_one("#fleet-filter", Input)
        if not box.value and self.filter_error is None and not self.filter.terms:
            if self.app.focused is box:
                self.screen.set_focus(self.table)
            return
        box.value = ""  # Input.Changed applies the empty filter
        self.screen.set_focus(self.table)

    # --- the highlighted row, marks, and what applies to them -----------------------------
    def _highlighted(self) -> str | None:
        key = self.table.cursor_key()
        return key if key in self.shown else None

    def action_mark(self) -> None:
        """Space: mark or unmark the highlighted row, then move down (as k9s)."""
        device_id = self._highlighted()
        if device_id is None:
            return
        self.marked.symmetric_difference_update({device_id})
        row = self.devices[device_id]
        self._put(device_id, self._cells(row, self.now()), [0], device_id in self.flashing)
        self.table.action_cursor_down()
        self._show_summary()

    def targets(self) -> list[str]:
        """What a fleet action applies to: the marked rows still shown, else the highlighted
        one."""
        marked = sorted(i for i in self.marked if i in self.shown)
        if marked:
            return marked
        device_id = self._highlighted()
        return [device_id] if device_id else []

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "focus_filter" and isinstance(self.app.focused, Input):
            return False  # a `/` typed into the filter box is text
        return cm.write_allowed(action, bool(getattr(hub_app(self), "read_only", False)))

    def action_logs(self) -> None:
        device_id = self._highlighted()
        if device_id is not None:
            self.post_message(self.OpenDevice(device_id, tab="logs"))

    # --- change notices --------------------------------------------------------------------
    def hub_notice(self, doc: Mapping[str, Any]) -> None:
        kind = str(doc.get("kind", ""))
        if kind in self.IGNORED:
            return
        ids = fm.notice_ids(doc)
        if ids is None:
            self.hub_changed(kind)  # may touch any device: a debounced full reload
            return
        self._pending.update(ids)
        if ids and not self._targeted_timer:
            self._targeted_timer = True
            self.set_timer(TARGETED_DELAY, self._flush_pending)

    def _flush_pending(self) -> None:
        self._targeted_timer = False
        ids, self._pending = sorted(self._pending), set()
        if len(ids) > TARGETED_MAX:
            self.hub_changed("devices")
        elif ids:
            # job(): a view removed while this waited on the hub (app quitting) ends quietly
            self.run_worker(job(self._refresh_ids, ids), group="targeted")

    async def _refresh_ids(self, ids: list[str]) -> None:
        try:
            found = await self.source.fetch_ids(hub_app(self).session, ids)
        except ApiError:
            return  # the link is down; the banner says so and a reload follows the link
        self.apply(
            [fm.device_row(doc) for doc in found.values()],
            gone=[i for i in ids if i not in found],
        )

    # --- loading ---------------------------------------------------------------------------
    async def load(self) -> None:
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            result = await self._list_page(cursor)
            if result is None:
                return  # reported; the rows stay as they were (the banner marks them stale)
            items: list[dict[str, Any]] = result.get("items", [])
            rows = [fm.device_row(d) for d in items]
            seen.update(r.id for r in rows)
            self.apply(rows)  # each page is painted as it arrives
            cursor = result.get("next_cursor")
            if not cursor or len(seen) >= MAX_DEVICES:
                break
        self.more = cursor is not None
        self.apply([], gone=[i for i in self.devices if i not in seen])
        self.loaded_at = self.now()

    async def _list_page(self, cursor: str | None) -> dict[str, Any] | None:
        try:
            return await self.source.page(
                hub_app(self).session, cursor, self.filter.wants_decommissioned
            )
        except ApiError as exc:
            hub_app(self).report_error(f"devices.list: {exc.code}", str(exc))
            return None

    # --- the table -------------------------------------------------------------------------
    def apply(self, rows: Iterable[fm.DeviceRow], gone: Iterable[str] = ()) -> None:
        """Take new versions of some devices (and drop others), touching only the cells that
        changed. Rows whose content changed flash."""
        keep = self.table.cursor_key()
        now = self.now()
        structural = resort = False
        flash_until = time.monotonic() + FLASH_SECONDS
        added: list[fm.DeviceRow] = []
        for row in rows:
            if row.status == "decommissioned" and not self.filter.wants_decommissioned:
                gone = [*gone, row.id]
                continue
            old = self.devices.get(row.id)
            self.devices[row.id] = row
            visible = self._keeps(row)
            if row.id in self.shown and not visible:
                self._remove(row.id)
                structural = True
            elif visible and row.id not in self.shown:
                added.append(row)
            elif visible and old != row:
                if old is None or fm.sort_key(old, self.sort.column) != fm.sort_key(
                    row, self.sort.column
                ):
                    resort = True
                self._update(row, now, flash_until if old is not None else None)
        for device_id in gone:
            self.devices.pop(device_id, None)
            if device_id in self.shown:
                self._remove(device_id)
                structural = True
        if added:
            structural = True
            resort = self._append(added, now) or resort
        if resort:
            self._sort_table()
        if structural or resort:
            self.table.restore_cursor(keep)
        self._show_summary()

    def _keeps(self, row: fm.DeviceRow) -> bool:
        return self.filter_error is None and self.filter.keeps(row)

    def _cells(self, row: fm.DeviceRow, now: float) -> tuple[fm.Cell, ...]:
        cells = fm.cells(row, now)
        if row.id in self.marked:
            cells = (fm.marked_cell(row.id), *cells[1:])
        return cells

    def _add(self, row: fm.DeviceRow, now: float) -> None:
        cells = self._cells(row, now)
        self.shown[row.id] = cells
        self._count(row)
        self.table.add_cells(row.id, cells)

    def _append(self, rows: list[fm.DeviceRow], now: float) -> bool:
        """Add new rows at the bottom in the sort's order; True when the table then needs
        sorting. Pages arrive ordered by id, so with the default sort a page lands after the
        rows already there and the table (thousands of rows) is not re-sorted per page."""
        column, reverse = self.sort.column, self.sort.reverse
        rows = sorted(rows, key=lambda r: fm.sort_key(r, column), reverse=reverse)
        in_order = True
        if self.table.row_count:
            last = self.devices.get(str(self.table.last_key()))
            if last is None:
                in_order = False
            else:
                a, b = fm.sort_key(last, column), fm.sort_key(rows[0], column)
                in_order = a >= b if reverse else a <= b
        for row in rows:
            self._add(row, now)
        return not in_order

    def _remove(self, device_id: str) -> None:
        self.shown.pop(device_id, None)
        self._uncount(device_id)
        self.flashing.pop(device_id, None)
        self.table.remove_row(device_id)

    def _update(self, row: fm.DeviceRow, now: float, flash_until: float | None) -> None:
        self._uncount(row.id)
        self._count(row)
        new = self._cells(row, now)
        changed = fm.changed_columns(self.shown[row.id], new)
        if not changed:
            self.shown[row.id] = new
            return  # e.g. a newer last_seen of an online device: nothing to redraw
        if flash_until is not None:
            if row.id not in self.flashing:
                changed = list(range(len(new)))  # the whole row lights up
            self.flashing[row.id] = flash_until
            self._ensure_flash_timer()
        self._put(row.id, new, changed, row.id in self.flashing)
        self.updates += 1

    def _put(
        self, device_id: str, cells: tuple[fm.Cell, ...], which: Iterable[int], flash: bool
    ) -> None:
        self.shown[device_id] = cells
        self.table.put_cells(device_id, cells, which, flash)

    def _ensure_flash_timer(self) -> None:
        if self._flash_timer is None:
            self._flash_timer = self.set_interval(0.25, self._unflash)

    def _unflash(self) -> None:
        t = time.monotonic()
        for device_id in [i for i, end in self.flashing.items() if end <= t]:
            del self.flashing[device_id]
            if device_id in self.shown:
                cells = self.shown[device_id]
                self._put(device_id, cells, range(len(cells)), False)
        if not self.flashing and self._flash_timer is not None:
            self._flash_timer.stop()
            self._flash_timer = None

    def _tick_ages(self) -> None:
        """Redraw the cells whose text depends on the clock ("offline 4m", Seen): only the
        rows whose age text changed (Seen is coarse: minutes and up)."""
        now = self.now()
        for device_id, row in self.devices.items():
            shown = self.shown.get(device_id)
            if shown is None:
                continue
            if row.state == "offline" or shown[fm.SEEN][0] != fm.seen_text(row.last_seen, now):
                new = self._cells(row, now)
                changed = fm.changed_columns(self.shown[device_id], new)
                if changed:
                    self._put(device_id, new, changed, device_id in self.flashing)

    def _sort_table(self) -> None:
        self.table.sort_rows(self.devices, self.sort)

    def _resort(self) -> None:
        keep = self.table.cursor_key()
        self._sort_table()
        self.table.restore_cursor(keep)

    def _rebuild(self) -> None:
        """A new filter: the table's rows change wholesale (the only full redraw)."""
        keep = self.table.cursor_key()
        self.table.clear()
        self.shown.clear()
        self.counted.clear()
        self.counts = fm.summarize(())
        self.flashing.clear()
        now = self.now()
        for row in fm.ordered((r for r in self.devices.values() if self._keeps(r)), self.sort):
            self._add(row, now)
        self.table.restore_cursor(keep)
        self._show_summary()

    def _count(self, row: fm.DeviceRow) -> None:
        self.counted[row.id] = row
        fm.tally(self.counts, row)

    def _uncount(self, device_id: str) -> None:
        old = self.counted.pop(device_id, None)
        if old is not None:
            fm.tally(self.counts, old, -1)

    def _show_summary(self) -> None:
        text = fm.summary_text(self.counts, len(self.devices), self.sort, self.more)
        marked = len(self.marked & self.shown.keys())
        if marked:
            text += f" │ {marked} marked"
        if self.filter_error is not None:
            text = f"invalid filter: {self.filter_error}"
        self.query_one("#fleet-summary", Static).update(Content(text))
        empty = self.query_one("#fleet-empty", Static)
        empty.display = not self.shown
        if not self.shown:
            box = self.query_one("#fleet-filter", Input).value.strip()
            empty.update(Content(empty_text(len(self.devices), box, self.filter_error)))

    def device_ids(self) -> list[str]:
        """Loaded device ids (for completion and the command palette)."""
        return sorted(self.devices)
