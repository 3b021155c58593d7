"""The Fleet table at 5,000 devices: time to first paint and the cost of one row update,
beside a baseline measured in the same run (a bare Textual DataTable given the same rows as
plain strings, and a bare ``update_cell``).

Headless Textual (``App.run_test``). First paint includes the repaint (Pilot's ``pause`` lets
the app process the refresh). An update's figure is the work of taking the new row (diff,
``update_cell`` of the changed cells, flash) without the repaint that follows, which Textual
paces by frames and which renders only the rows on screen whatever the fleet size. No hub: the rows are fed to the view the way its
loader feeds them. Goal (issue 7): first paint <= 1 s, an update <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from textual.app import App, ComposeResult
from textual.widgets import DataTable

from tui.screens import fleet_model as fm
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


async def fleet_figures(count: int, updates: int) -> tuple[float, list[float]]:
    app = FleetApp()
    rows = [fm.device_row(doc(i)) for i in range(count)]
    async with app.run_test(size=(120, 40)) as pilot:
        view = app.query_one(FleetView)
        start = time.perf_counter()
        view.apply(rows)
        await pilot.pause()
        first = time.perf_counter() - start
        costs = []
        for n in range(updates):
            i = (n * 7) % 30  # rows on screen: the repaint is part of the cost
            row = fm.device_row(doc(i, "offline" if n % 2 == 0 else "online"))
            start = time.perf_counter()
            view.apply([row])
            costs.append(time.perf_counter() - start)
            await pilot.pause()  # the repaint, outside the figure (Textual's frame pacing)
    return first, costs


async def bare_figures(count: int, updates: int) -> tuple[float, list[float]]:
    app = BareApp()
    cells = [tuple(c for c, _ in fm.cells(fm.device_row(doc(i)), NOW)) for i in range(count)]
    async with app.run_test(size=(120, 40)) as pilot:
        table: DataTable[Any] = app.query_one(DataTable)
        keys = [table.add_column(label) for _, label in fm.COLUMNS]
        start = time.perf_counter()
        for i, row in enumerate(cells):
            table.add_row(*row, key=f"sim-{i:05d}")
        await pilot.pause()
        first = time.perf_counter() - start
        costs = []
        for n in range(updates):
            i = (n * 7) % 30
            start = time.perf_counter()
            table.update_cell(f"sim-{i:05d}", keys[1], "○ offline" if n % 2 == 0 else "● online")
            costs.append(time.perf_counter() - start)
            await pilot.pause()
    return first, costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--updates", type=int, default=200)
    args = parser.parse_args()
    base_first, base_costs = asyncio.run(bare_figures(args.devices, args.updates))
    first, costs = asyncio.run(fleet_figures(args.devices, args.updates))

    def line(name: str, first: float, costs: list[float]) -> str:
        return (
            f"{name:<28} first paint {first * 1000:7.0f} ms   update p50 "
            f"{pct(costs, 0.5) * 1000:5.2f} ms  p95 {pct(costs, 0.95) * 1000:5.2f} ms  "
            f"mean {statistics.mean(costs) * 1000:5.2f} ms"
        )

    print(
        f"{args.devices} devices, {args.updates} single-row updates (update: work before the repaint)"
    )
    print(line("baseline: bare DataTable", base_first, base_costs))
    print(line("FleetView (styled, diffed)", first, costs))
    print("goal: first paint <= 1000 ms, update <= 5 ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
