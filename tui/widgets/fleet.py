"""Fleet: the live device table. Rows are kept by device id and updated in place, cell by
cell, as change notices arrive; the pure rules are in ``tui/screens/fleet_model.py``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml
from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.coordinate import Coordinate
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable, Input, Static
from textual.widgets.data_table import ColumnKey, RowKey

from protocol import errors as codes
from tui.client import ApiError
from tui.screens import detail_model as dm
from tui.screens import fleet_model as fm
from tui.screens.dialogs import ConfirmScreen, TextScreen
from tui.widgets.base import HubView, call, hub_app, job

PAGE_LIMIT = 1000  # per plain devices.list call (the API's maximum)
SUMMARY_LIMIT = 500  # per summary-view call (the hub's cap for that view)
MAX_DEVICES = 20_000  # a sane bound on what one table holds (and one load fetches)
TARGETED_MAX = 32  # a notice naming more devices than this reloads everything (in place)
TARGETED_DELAY = 0.2  # gathers the ids of a burst of notices into one fetch
FETCH_PARALLEL = 8
ENRICH_MAX = 200  # devices.get calls per load when the hub has no summary view
FLASH_SECONDS = 1.0
DEVICE_WAIT = 4  # seconds the hub waits for each device on reconcile
AGE_SECONDS = 15.0  # how often "offline 4m" ages are redrawn (only the cells that change)
# Fixed widths: these cells change often and a narrower text must not rescan the column.
FIXED_WIDTH = {"status": 15, "rollout": 10, "cpu": 10, "mem": 10, "disk": 10, "seen": 5}
STYLES = {"ok": Style(color="green"), "warn": Style(color="yellow"), "bad": Style(color="red")}
STYLES["dim"] = Style(dim=True)
STYLES["mark"] = Style(color="cyan", bold=True)
FLASH = Style(bold=True, bgcolor="grey30")
# Every (style name, flashing) pair built once: a first paint makes 45,000 cells.
CELL_STYLES = {
    (name, flash): (STYLES.get(name, Style()) + FLASH) if flash else STYLES.get(name, Style())
    for name in ("", *STYLES)
    for flash in (False, True)
}
EMPTY_HELP = (
    "No devices yet. A new hub has none until devices enrol: create a token with "
    "`signalbeam token create --tenant NAME`, then run `signalbeam-agent enroll` on a device."
)


def empty_text(loaded: int, filter_text: str, filter_error: str | None) -> str:
    """What the empty table says: why it is empty, never the enrolment hint to a fleet that
    has devices."""
    if filter_error is not None:
        return f"Invalid filter: {filter_error}. Nothing is shown until it is fixed; Esc clears it."
    if loaded == 0:
        return EMPTY_HELP
    return f"No device matches {filter_text!r} ({loaded} loaded). Esc clears the filter."


class FleetTable(DataTable[Any]):
    """A DataTable that sizes its columns from the cells' plain text.

    DataTable measures every cell of every new row on idle by rendering it, and builds each
    row's renderables to do so: for 5,000 rows most of the first paint. Every cell here is a
    one-line ``Text``, so its width is its ``cell_len``, and fixed-width columns need no
    measuring at all. Textual's own pass then runs for no rows (the virtual size)."""

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        auto = [(c.key, c) for c in self.ordered_columns if c.auto_width]
        for row_key in new_rows:
            if row_key not in self.rows:
                continue  # removed before the idle pass came
            for key, column in auto:
                cell = self.get_cell(row_key, key)
                width = cell.cell_len if isinstance(cell, Text) else cell_len(str(cell))
                if width > column.content_width:
                    column.content_width = width
        super()._update_dimensions(())


class FleetView(HubView):
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
        self.summary_view = True  # cleared when the hub refuses devices.list's "view"
        self.ids_filter = True  # cleared when the hub refuses devices.list's "ids"
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
        table = FleetTable(id="fleet-table", cursor_type="row", zebra_stripes=True)
        for key, label in fm.COLUMNS:
            table.add_column(label, key=key, width=FIXED_WIDTH.get(key))
        yield table
        yield Static(Content(EMPTY_HELP), id="fleet-empty")

    def on_mount(self) -> None:
        self.query_one("#fleet-empty").display = False
        self.set_interval(AGE_SECONDS, self._tick_ages)

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one("#fleet-table", DataTable)

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
        key = self._cursor_key()
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
        return dm.write_allowed(action, bool(getattr(hub_app(self), "read_only", False)))

    def action_describe(self) -> None:
        device_id = self._highlighted()
        if device_id is not None:
            self.run_worker(job(self._describe, device_id, False), group="describe")

    def action_yaml(self) -> None:
        device_id = self._highlighted()
        if device_id is not None:
            self.run_worker(job(self._describe, device_id, True), group="describe")

    async def _describe(self, device_id: str, as_yaml: bool) -> None:
        device = await call(self, "devices.get", {"id": device_id})
        if device is None:
            return
        if as_yaml:
            body = yaml.safe_dump(dm.yaml_docs(device), sort_keys=False, allow_unicode=True)
            title = f"{device_id}: desired and reported (YAML) · Esc closes"
        else:
            body = "\n".join(dm.describe_lines(device, self.now()))
            title = f"describe {device_id} · Esc closes"
        self.app.push_screen(TextScreen(title, body))

    def action_logs(self) -> None:
        device_id = self._highlighted()
        if device_id is not None:
            self.post_message(self.OpenDevice(device_id, tab="logs"))

    def action_fleet_write(self, action: str) -> None:
        """``g`` reconcile now / ``D`` decommission, on the marked rows (or the highlighted
        one), after a question that counts and names them."""
        ids = self.targets()
        if not ids:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(job(self._fleet_write, action, ids), group="fleet-write")

        self.app.push_screen(ConfirmScreen(fm.fleet_question(action, ids)), answered)

    async def _fleet_write(self, action: str, ids: list[str]) -> None:
        verb = f"devices.{action}"
        body: dict[str, Any] = {"timeout": DEVICE_WAIT} if action == "reconcile" else {}
        gate = asyncio.Semaphore(FETCH_PARALLEL)
        session = hub_app(self).session

        async def one(device_id: str) -> str | None:
            async with gate:
                try:
                    await session.call(verb, {"id": device_id, **body})
                except ApiError as exc:
                    return f"{device_id}: {exc}"
            return None

        failed = [f for f in await asyncio.gather(*(one(i) for i in ids)) if f is not None]
        done = len(ids) - len(failed)
        self.marked.difference_update(ids)
        self._rebuild()
        message = f"{action}: {done} of {len(ids)} device(s)"
        if failed:
            message += "; " + "; ".join(failed[:3]) + (" …" if len(failed) > 3 else "")
            hub_app(self).report_error(verb, message)
        else:
            self.notify(message, title=verb, markup=False)

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
            found = await self._fetch_ids(ids)
        except ApiError:
            return  # the link is down; the banner says so and a reload follows the link
        self.apply(
            [fm.device_row(doc) for doc in found.values()],
            gone=[i for i in ids if i not in found],
        )

    async def _fetch_ids(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The row documents of ``ids`` by id; a device the hub no longer has is absent.
        One ``devices.list`` with ``ids`` (TARGETED_MAX is far under its cap); a hub without
        that filter gets one ``devices.get`` per device, a few at a time."""
        session = hub_app(self).session
        if self.ids_filter:
            body: dict[str, Any] = {"ids": ids, "include_decommissioned": True}
            if self.summary_view:
                body.update(view="summary", limit=SUMMARY_LIMIT)
            try:
                result = await session.call("devices.list", body)
            except ApiError as exc:
                if exc.code != codes.INVALID or not (exc.field or "").startswith(("ids", "view")):
                    raise
                self.ids_filter = False  # an older hub
            else:
                docs = {str(d.get("id")): dict(d) for d in result.get("items", [])}
                if not self.summary_view:
                    await self._enrich(list(docs.values()))
                return docs
        gate = asyncio.Semaphore(FETCH_PARALLEL)

        async def one(device_id: str) -> dict[str, Any] | None:
            async with gate:
                try:
                    return await session.call("devices.get", {"id": device_id})
                except ApiError as exc:
                    if exc.code == codes.NOT_FOUND:
                        return None
                    raise

        got = await asyncio.gather(*(one(i) for i in ids))
        return {i: d for i, d in zip(ids, got, strict=True) if d is not None}

    # --- loading ---------------------------------------------------------------------------
    async def load(self) -> None:
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            result = await self._list_page(cursor)
            if result is None:
                return  # reported; the rows stay as they were (the banner marks them stale)
            items: list[dict[str, Any]] = result.get("items", [])
            if not self.summary_view:
                await self._enrich(items)
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
        body: dict[str, Any] = {"limit": PAGE_LIMIT}
        if self.summary_view:
            body.update(view="summary", limit=SUMMARY_LIMIT)
        if self.filter.wants_decommissioned:
            body["include_decommissioned"] = True
        if cursor is not None:
            body["cursor"] = cursor
        try:
            return await hub_app(self).session.call("devices.list", body)
        except ApiError as exc:
            if self.summary_view and exc.code == codes.INVALID and exc.field == "view":
                self.summary_view = False  # an older hub: plain pages plus devices.get
                return await self._list_page(cursor)
            hub_app(self).report_error(f"devices.list: {exc.code}", str(exc))
            return None

    async def _enrich(self, items: list[dict[str, Any]]) -> None:
        """Desired and reported state from ``devices.get``, for a hub without the summary
        view (bounded: the first ENRICH_MAX devices of each page)."""
        gate = asyncio.Semaphore(FETCH_PARALLEL)

        async def one(device: dict[str, Any]) -> None:
            async with gate:
                # Quietly: a device decommissioned meanwhile must not spam notifications.
                try:
                    full = await hub_app(self).session.call("devices.get", {"id": device["id"]})
                except ApiError:
                    return
            device["desired"] = full.get("desired")
            device["reported"] = full.get("reported")

        await asyncio.gather(*(one(d) for d in items[:ENRICH_MAX] if "desired" not in d))

    # --- the table -------------------------------------------------------------------------
    def apply(self, rows: Iterable[fm.DeviceRow], gone: Iterable[str] = ()) -> None:
        """Take new versions of some devices (and drop others), touching only the cells that
        changed. Rows whose content changed flash."""
        keep = self._cursor_key()
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
            self._restore_cursor(keep)
        self._show_summary()

    def _keeps(self, row: fm.DeviceRow) -> bool:
        return self.filter_error is None and self.filter.keeps(row)

    def _cells(self, row: fm.DeviceRow, now: float) -> tuple[fm.Cell, ...]:
        cells = fm.cells(row, now)
        if row.id in self.marked:
            cells = (fm.marked_cell(row.id), *cells[1:])
        return cells

    def _text(self, cell: fm.Cell, flash: bool) -> Text:
        text, style = cell
        return Text(text, style=CELL_STYLES[style, flash], no_wrap=True)

    def _add(self, row: fm.DeviceRow, now: float) -> None:
        cells = self._cells(row, now)
        self.shown[row.id] = cells
        self._count(row)
        self.table.add_row(*(self._text(c, False) for c in cells), key=row.id)

    def _append(self, rows: list[fm.DeviceRow], now: float) -> bool:
        """Add new rows at the bottom in the sort's order; True when the table then needs
        sorting. Pages arrive ordered by id, so with the default sort a page lands after the
        rows already there and the table (thousands of rows) is not re-sorted per page."""
        column, reverse = self.sort.column, self.sort.reverse
        rows = sorted(rows, key=lambda r: fm.sort_key(r, column), reverse=reverse)
        in_order = True
        table = self.table
        if table.row_count:
            last = self.devices.get(str(table.coordinate_to_cell_key(
                Coordinate(table.row_count - 1, 0)).row_key.value))  # fmt: skip
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
        table = self.table
        self.shown[device_id] = cells
        for i in which:
            key = fm.COLUMN_KEYS[i]
            column = table.columns[ColumnKey(key)]
            # Grow only: a narrower text with update_width would rescan the whole column.
            grow = column.auto_width and cell_len(cells[i][0]) > column.content_width
            table.update_cell(device_id, key, self._text(cells[i], flash), update_width=grow)

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
        devices, column = self.devices, self.sort.column
        self.table.sort(
            "device",
            key=lambda cell: fm.sort_key(devices[fm.cell_device_id(cell.plain)], column),
            reverse=self.sort.reverse,
        )

    def _resort(self) -> None:
        keep = self._cursor_key()
        self._sort_table()
        self._restore_cursor(keep)

    def _rebuild(self) -> None:
        """A new filter: the table's rows change wholesale (the only full redraw)."""
        keep = self._cursor_key()
        table = self.table
        table.clear()
        self.shown.clear()
        self.counted.clear()
        self.counts = fm.summarize(())
        self.flashing.clear()
        now = self.now()
        for row in fm.ordered((r for r in self.devices.values() if self._keeps(r)), self.sort):
            self._add(row, now)
        self._restore_cursor(keep)
        self._show_summary()

    def _cursor_key(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def _restore_cursor(self, key: str | None) -> None:
        """The cursor stays on its device when rows around it come, go or move."""
        table = self.table
        if key is not None and key in table.rows:
            index = table.get_row_index(key)
            if index != table.cursor_row:
                table.cursor_coordinate = Coordinate(index, table.cursor_column)

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
