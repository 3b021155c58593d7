"""The Fleet view's table: a DataTable that measures its cells cheaply, the cell styles, and
what an empty table says. The view that fills it is ``fleet.py``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from tui.models import fleet as fm

FLASH_SECONDS = 1.0
# Fixed widths: these cells change often and a narrower text must not rescan the column.
FIXED_WIDTH = {
    "status": 15, "rollout": 10, "data": 10, "cpu": 10, "mem": 10, "disk": 10, "seen": 5
}  # fmt: skip
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

    @classmethod
    def with_columns(cls, **kwargs: Any) -> FleetTable:
        table = cls(cursor_type="row", zebra_stripes=True, **kwargs)
        for key, label in fm.COLUMNS:
            table.add_column(label, key=key, width=FIXED_WIDTH.get(key))
        return table

    def sort_rows(self, devices: Mapping[str, fm.DeviceRow], sort: fm.Sort) -> None:
        """Order the rows by ``sort`` over their devices (keyed by the device cell)."""
        column = sort.column
        self.sort(
            "device",
            key=lambda cell: fm.sort_key(devices[fm.cell_device_id(cell.plain)], column),
            reverse=sort.reverse,
        )

    @staticmethod
    def text(cell: fm.Cell, flash: bool) -> Text:
        text, style = cell
        return Text(text, style=CELL_STYLES[style, flash], no_wrap=True)

    def add_cells(self, device_id: str, cells: tuple[fm.Cell, ...]) -> None:
        self.add_row(*(self.text(c, False) for c in cells), key=device_id)

    def put_cells(
        self, device_id: str, cells: tuple[fm.Cell, ...], which: Iterable[int], flash: bool
    ) -> None:
        for i in which:
            key = fm.COLUMN_KEYS[i]
            column = self.columns[ColumnKey(key)]
            # Grow only: a narrower text with update_width would rescan the whole column.
            grow = column.auto_width and cell_len(cells[i][0]) > column.content_width
            self.update_cell(device_id, key, self.text(cells[i], flash), update_width=grow)

    def last_key(self) -> str | None:
        """The device id of the bottom row (None for an empty table)."""
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(Coordinate(self.row_count - 1, 0)).row_key.value

    def cursor_key(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def restore_cursor(self, key: str | None) -> None:
        """The cursor stays on its device when rows around it come, go or move."""
        if key is not None and key in self.rows:
            index = self.get_row_index(key)
            if index != self.cursor_row:
                self.cursor_coordinate = Coordinate(index, self.cursor_column)
