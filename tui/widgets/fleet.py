"""Fleet overview: summary bar, filter box and the device table, live from change notices."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from tui.client import ApiError
from tui.screens import model
from tui.widgets.base import HubView, call, hub_app

PAGE = 500  # devices per page; `]` / `[` move between pages
ENRICH_MAX = 200  # devices.get calls per load when devices.list lacks desired/reported
ENRICH_PARALLEL = 8
EMPTY_HELP = (
    "No devices match. A new hub has none until devices enrol: create a token with "
    "`signalbeam token create --tenant NAME`, then run `signalbeam-agent enroll` on a device."
)


class FleetView(HubView):
    # Every kind but these: the sync work adds device-state kinds this view must follow.
    IGNORED = frozenset({"bundles", "tokens", "keys"})
    RELOAD_DELAY = 1.0  # a load may cost up to ENRICH_MAX devices.get calls
    # Enter on a row is the table's own select key (RowSelected below).
    BINDINGS = [
        Binding("slash", "focus_filter", "Filter"),
        # Hidden from the footer (no room at 80 columns); the summary bar names them.
        Binding("right_square_bracket", "page(1)", "Next page", show=False),
        Binding("left_square_bracket", "page(-1)", "Previous page", show=False),
    ]

    class OpenDevice(Message):
        def __init__(self, device_id: str) -> None:
            super().__init__()
            self.device_id = device_id

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filter = model.DeviceFilter()
        self.rows: list[model.DeviceRow] = []
        self.page_size = PAGE
        self.cursors: list[str | None] = [None]  # the cursor of each page up to this one
        self.next_cursor: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("loading…", id="fleet-summary")
        yield Input(
            placeholder="filter: tag:NAME group:NAME status:online|offline|updating|failed text",
            id="fleet-filter",
        )
        table: DataTable[str] = DataTable(id="fleet-table", cursor_type="row", zebra_stripes=True)
        table.add_columns(*model.COLUMNS)
        yield table
        yield Static(Content(EMPTY_HELP), id="fleet-empty")

    def on_mount(self) -> None:
        self.query_one("#fleet-empty").display = False

    def action_focus_filter(self) -> None:
        self.query_one("#fleet-filter", Input).focus()

    @on(DataTable.RowSelected, "#fleet-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.post_message(self.OpenDevice(event.row_key.value))

    @on(Input.Submitted, "#fleet-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        try:
            self.filter = model.parse_filter(event.value)
        except model.FilterError as exc:
            self.notify(str(exc), title="filter", severity="error", markup=False)
            return
        self.cursors = [None]
        self.query_one("#fleet-table").focus()
        self.reload()

    def action_page(self, step: int) -> None:
        if step > 0 and self.next_cursor is not None:
            self.cursors.append(self.next_cursor)
            self.next_cursor = None  # a second press before the page arrives must not skip
        elif step < 0 and len(self.cursors) > 1:
            self.cursors.pop()
        else:
            return
        self.reload()

    async def load(self) -> None:
        body = {**self.filter.body(), "limit": self.page_size}
        if self.cursors[-1] is not None:
            body["cursor"] = self.cursors[-1]
        result = await call(self, "devices.list", body)
        if result is None:
            return
        self.next_cursor = result.get("next_cursor")
        items: list[dict[str, Any]] = result.get("items", [])
        await self._enrich(items)
        now = time.time()
        rows = [model.device_row(d, now) for d in items]
        self.rows = [r for r in rows if self.filter.keeps(r)]
        self._show()

    async def _enrich(self, items: list[dict[str, Any]]) -> None:
        """Fill desired and reported state from ``devices.get`` when the list lacks them."""
        wanted = [d for d in items if "desired" not in d][:ENRICH_MAX]
        gate = asyncio.Semaphore(ENRICH_PARALLEL)

        async def one(device: dict[str, Any]) -> None:
            async with gate:
                # Quietly: a device decommissioned meanwhile must not spam notifications,
                # and a lost link already failed the devices.list call loudly.
                try:
                    full = await hub_app(self).session.call("devices.get", {"id": device["id"]})
                except ApiError:
                    return
            device["desired"] = full.get("desired")
            device["reported"] = full.get("reported")

        await asyncio.gather(*(one(d) for d in wanted))

    def _show(self) -> None:
        table: DataTable[str] = self.query_one("#fleet-table", DataTable)
        keep = None
        if table.row_count:
            keep = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        table.clear()
        for row in self.rows:
            table.add_row(*row.cells(), key=row.id)
        if keep is not None and keep in table.rows:
            table.move_cursor(row=table.get_row_index(keep))
        summary = model.summary_text(
            model.summarize(self.rows), len(self.cursors), self.next_cursor is not None
        )
        self.query_one("#fleet-summary", Static).update(Content(summary))
        self.query_one("#fleet-empty").display = not self.rows
