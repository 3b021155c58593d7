"""The Fleet table at 5,000 devices: time to first paint and the cost of one row update,
beside a baseline measured in the same run (a bare Textual DataTable given the same rows as
plain strings, and a bare ``update_cell``).

Headless Textual (``App.run_test``); each paint figure includes the repaint (Pilot's
``pause`` lets the app process the refresh). No hub: rows are fed to the view the way its
loader feeds them, in pages of 500 (``devices.list`` with ``view: summary``), with a paint
between pages. Two honest "first paint" figures:

- first screenful: the first page in and painted, which is what the operator sees first
  (the hub's time to serve that page, ~0.2 s for 500 summaries, comes on top);
- all rows: every page in and painted, the table complete (sortable, scrollable to the end).

Plus ``one batch``: all 5,000 rows handed over in a single call, then painted.

An update's figure is the work of taking the new row (diff, ``update_cell`` of the changed
cells, flash) without the repaint that follows, which Textual paces by frames and which
renders only the rows on screen whatever the fleet size. Goal (issue 7): first paint
<= 1 s, an update <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from typing import Any

from textual.app import App, ComposeResult
from textual.widgets import DataTable

from tui.models import fleet as fm
from tui.widgets.fleet import FleetView

NOW = 1_800_000_000.0


def doc(i: int, status: str = "online") -> dict[str, Any]:
    return {
        "id": f"sim-{i:05d}",
        "hostname": f"sim-{i:05d}",
        "status": status,
        "last_seen": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(NOW - 30)),
        "tags": ["lab"] if i % 2 else ["field"],
        "groups": ["north"] if i % 3 == 0 else [],
        "desired": {"bundle": "app", "version": "1.2.0", "via": "tag:lab"},
        "running": "app@1.2.0" if i % 5 else "app@1.1.0",
        "deployment": {"status": "healthy", "error": None},
        "containers": {"total": 2, "bad": 0},
        "rollout": None,
        "metrics": {
            m: {"last": float(i % 100), "spark": [float((i + j) % 100) for j in range(12)]}
            for m in ("cpu", "mem", "disk")
        },
    }


class FleetApp(App[None]):
    def compose(self) -> ComposeResult:
        yield FleetView(clock=lambda: NOW)


class BareApp(App[None]):
    def compose(self) -> ComposeResult:
        yield DataTable()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


PAGE = 500


class Figures:
    def __init__(self) -> None:
        self.screenful = self.paged = self.batch = 0.0
        self.costs: list[float] = []


async def fleet_figures(count: int, updates: int) -> Figures:
    out = Figures()
    rows = [fm.device_row(doc(i)) for i in range(count)]
    async with FleetApp().run_test(size=(120, 40)) as pilot:
        view = pilot.app.query_one(FleetView)
        gc.collect()  # the previous phase's rows are not freed inside this figure
        start = time.perf_counter()
        view.apply(rows)
        await pilot.pause()
        out.batch = time.perf_counter() - start
    async with FleetApp().run_test(size=(120, 40)) as pilot:
        view = pilot.app.query_one(FleetView)
        gc.collect()  # the previous phase's rows are not freed inside this figure
        start = time.perf_counter()
        for n in range(0, count, PAGE):
            # as the loader: each page's documents become rows, then are painted
            view.apply([fm.device_row(doc(i)) for i in range(n, min(count, n + PAGE))])
            await pilot.pause()
            if n == 0:
                out.screenful = time.perf_counter() - start
        out.paged = time.perf_counter() - start
        for n in range(updates):
            i = (n * 7) % 30  # rows on screen: the repaint is part of the cost
            row = fm.device_row(doc(i, "offline" if n % 2 == 0 else "online"))
            start = time.perf_counter()
            view.apply([row])
            out.costs.append(time.perf_counter() - start)
            await pilot.pause()  # the repaint, outside the figure (Textual's frame pacing)
    return out


async def bare_figures(count: int, updates: int) -> Figures:
    out = Figures()
    cells = [tuple(c for c, _ in fm.cells(fm.device_row(doc(i)), NOW)) for i in range(count)]
    async with BareApp().run_test(size=(120, 40)) as pilot:
        table: DataTable[Any] = pilot.app.query_one(DataTable)
        table.add_columns(*(label for _, label in fm.COLUMNS))
        gc.collect()  # the previous phase's rows are not freed inside this figure
        start = time.perf_counter()
        for i, row in enumerate(cells):
            table.add_row(*row, key=f"sim-{i:05d}")
        await pilot.pause()
        out.batch = time.perf_counter() - start
    async with BareApp().run_test(size=(120, 40)) as pilot:
        table = pilot.app.query_one(DataTable)
        keys = [table.add_column(label) for _, label in fm.COLUMNS]
        gc.collect()  # the previous phase's rows are not freed inside this figure
        start = time.perf_counter()
        for n in range(0, count, PAGE):
            for i in range(n, min(count, n + PAGE)):
                table.add_row(*cells[i], key=f"sim-{i:05d}")
            await pilot.pause()
            if n == 0:
                out.screenful = time.perf_counter() - start
        out.paged = time.perf_counter() - start
        for n in range(updates):
            i = (n * 7) % 30
            start = time.perf_counter()
            table.update_cell(f"sim-{i:05d}", keys[1], "○ offline" if n % 2 == 0 else "● online")
            out.costs.append(time.perf_counter() - start)
            await pilot.pause()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--updates", type=int, default=200)
    args = parser.parse_args()
    base = asyncio.run(bare_figures(args.devices, args.updates))
    fleet = asyncio.run(fleet_figures(args.devices, args.updates))

    def line(name: str, f: Figures) -> str:
        ms = [f"{x * 1000:6.0f} ms" for x in (f.screenful, f.paged, f.batch)]
        return (
            f"{name:<28} first screenful {ms[0]}  all rows {ms[1]}  one batch {ms[2]}   "
            f"update p50 {pct(f.costs, 0.5) * 1000:5.2f} ms  p95 {pct(f.costs, 0.95) * 1000:5.2f} "
            f"ms  mean {statistics.mean(f.costs) * 1000:5.2f} ms"
        )

    print(
        f"{args.devices} devices in pages of {PAGE}, {args.updates} single-row updates "
        "(update: work before the repaint)"
    )
    print(line("baseline: bare DataTable", base))
    print(line("FleetView (styled, diffed)", fleet))
    print("goal: first paint <= 1000 ms, update <= 5 ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
