"""The rollouts view's rendering: one progress bar per rollout, per-device states and reasons.

The hub does not serve ``rollouts.list`` / ``rollouts.get`` yet (issue 5), so the
integration tests can only see the "not available" path; this renders documents of the
agreed shape through the view's own entry points, with no hub and no NATS involved.
"""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult
from textual.widgets import DataTable, Label, ProgressBar, Static

from tui.app import SignalBeamApp
from tui.widgets.rollouts import EMPTY, RolloutsView

ROLLOUTS: list[dict[str, Any]] = [
    {
        "id": "r1",
        "bundle": "warehouse-monitor",
        "version": "1.3.0",
        "state": "running",
        "counts": {"Pending": 2, "Updating": 1, "Succeeded": 3, "Failed": 1},
    },
    {"id": "r2", "bundle": "hello", "version": "2.0.0", "state": "paused", "counts": {}},
]
DETAIL = {
    **ROLLOUTS[0],
    "devices": [
        {"device": "dev-1", "state": "Failed", "reason": "unhealthy after 60s; rolled back"},
        {"device": "dev-2", "state": "Succeeded", "reason": None},
    ],
}


class Harness(App[None]):
    CSS_PATH = SignalBeamApp.CSS_PATH  # the real app's layout (resolved next to tui/app.py)

    def compose(self) -> ComposeResult:
        yield RolloutsView(id="rollouts-view")


async def test_progress_bars_and_device_rows() -> None:
    app = Harness()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(RolloutsView)
        assert view.show_rollouts(ROLLOUTS) == "r1"
        view.show_devices(DETAIL)
        await pilot.pause()
        bars = list(app.query(ProgressBar))
        assert [(b.progress, b.total) for b in bars] == [(4, 7), (0, 1)]
        labels = [str(label.content) for label in app.query(Label)]
        assert labels[:2] == [
            "r1  warehouse-monitor@1.3.0  [running]",
            "  pending 2 · updating 1 · succeeded 3 · failed 1",
        ]
        # both rollouts are on screen at 80x24, above the device rows
        assert all(bar.region.height == 1 for bar in bars)
        assert bars[1].region.y < app.query_one("#rollout-devices").region.y
        table = app.query_one("#rollout-devices", DataTable)
        assert [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)] == [
            ["dev-1", "Failed", "unhealthy after 60s; rolled back"],
            ["dev-2", "Succeeded", "-"],
        ]
        # an empty list says how to start one, and hides the empty widgets
        assert view.show_rollouts([]) is None
        assert str(app.query_one("#rollouts-status", Static).content) == EMPTY
        assert app.query_one("#rollouts-list").display is False
