"""The Fleet table with 5,000 devices (Pilot, no hub: the rows are fed to the view the way
its loader feeds them, so the test is about the table alone). A change to one row rewrites
that row's changed cells and leaves every other row's cells untouched; sorting and filtering
keep the cursor on its device."""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult
from textual.coordinate import Coordinate

from tests.harness.tui import wait_for
from tui.models import fleet as fm
from tui.widgets.fleet import FleetView

NOW = 1_800_000_000.0
COUNT = 5000


def iso(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def summary_doc(i: int, **extra: Any) -> dict[str, Any]:
    """A devices.list summary item, as the hub's summary view sends it."""
    doc: dict[str, Any] = {
        "id": f"sim-{i:04d}",
        "hostname": f"sim-{i:04d}",
        "status": "online" if i % 7 else "offline",
        "last_seen": iso(NOW - (30 if i % 7 else 600)),
        "tags": ["lab"] if i % 2 else ["field"],
        "groups": ["north"] if i % 3 == 0 else [],
        "desired": {"bundle": "app", "version": "1.2.0", "via": "tag:lab"},
        "running": "app@1.2.0",
        "deployment": {"status": "healthy", "error": None},
        "containers": {"total": 2, "bad": 0},
        "rollout": None,
        "metrics": {
            m: {"last": float((i * k) % 100), "spark": [float((i + j) % 100) for j in range(12)]}
            for k, m in enumerate(("cpu", "mem", "disk"), start=3)
        },
    }
    doc.update(extra)
    return doc


class FleetApp(App[None]):
    def compose(self) -> ComposeResult:
        yield FleetView(clock=lambda: NOW, id="fleet-view")


async def test_one_change_rewrites_one_row_of_5000() -> None:
    app = FleetApp()
    async with app.run_test(size=(120, 40)) as pilot:
        view = app.query_one(FleetView)
        view.apply([fm.device_row(summary_doc(i)) for i in range(COUNT)])
        await pilot.pause()
        table = view.table
        assert table.row_count == COUNT
        table.move_cursor(row=2500)
        await pilot.pause()
        before = {key: dict(cells) for key, cells in table._data.items()}
        # sim-0043 goes offline: only its status cell changes text (the row flashes)
        view.apply([fm.device_row(summary_doc(43, status="offline"))])
        after = table._data
        changed = [
            k.value
            for k, cells in after.items()
            if any(cells[c] is not before[k][c] for c in cells)
        ]
        assert changed == ["sim-0043"]
        assert str(table.get_cell("sim-0043", "status")) == "○ offline 30s"
        assert table.cursor_row == 2500  # no cursor jump
        assert view.updates == 1
        # after the flash only that row's cells are rewritten again
        await wait_for(pilot, lambda: not view.flashing, "the flash ended")
        assert all(
            all(after[k][c] is before[k][c] for c in after[k])
            for k in after
            if k.value != "sim-0043"
        )


async def test_sort_filter_and_invert_keep_the_cursor_on_its_device() -> None:
    app = FleetApp()
    async with app.run_test(size=(120, 40)) as pilot:
        view = app.query_one(FleetView)
        view.apply([fm.device_row(summary_doc(i)) for i in range(50)])
        await pilot.pause()
        table = view.table
        table.move_cursor(row=10)  # sim-0010
        view.set_sort(fm.Sort("cpu", False))  # busiest first
        await pilot.pause()

        def order() -> list[str]:
            return [
                table.coordinate_to_cell_key(Coordinate(r, 0)).row_key.value or ""
                for r in range(table.row_count)
            ]

        keys = order()
        cpus = [view.devices[k].metrics["cpu"][0] or 0.0 for k in keys]
        assert cpus == sorted(cpus, reverse=True)
        assert keys[table.cursor_row] == "sim-0010"
        view.set_filter(fm.parse_filter("!tag:lab"))
        await pilot.pause()
        assert table.row_count == 25 and order()[table.cursor_row] == "sim-0010"
        view.set_filter(fm.parse_filter("status:offline"))
        await pilot.pause()
        assert {view.devices[k].state for k in view.shown} == {"offline"}
        # a device leaving the filter disappears from the table without a rebuild
        view.apply([fm.device_row(summary_doc(0, status="online"))])
        assert "sim-0000" not in view.shown and table.row_count == len(view.shown)
