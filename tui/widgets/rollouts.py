"""Rollouts: one progress bar per rollout, and the selected rollout's devices with reasons.

Designed against ``rollouts.list`` / ``rollouts.get`` (issue 5). A hub without them answers
``not_found`` for the verb; the view then says so plainly instead of failing.
"""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import DataTable, Label, ListItem, ListView, ProgressBar, Static

from protocol import errors as codes
from tui.client import ApiError
from tui.screens import model
from tui.widgets.base import HubView, hub_app, job

UNAVAILABLE = "Rollouts are not available on this hub (it does not serve rollouts.list)."
EMPTY = "No rollouts yet. Start one with: signalbeam rollout start BUNDLE@VERSION --target …"


def verb_missing(exc: ApiError) -> bool:
    """The hub does not know the verb at all (an older hub), as opposed to a missing rollout."""
    return exc.code == codes.NOT_FOUND and (exc.field == "verb" or "verb" in exc.message)


class RolloutItem(ListItem):
    DEFAULT_CSS = """
    RolloutItem { height: 3; }
    RolloutItem Vertical { height: 3; }
    RolloutItem .rollout-bar { padding-left: 2; }
    """

    def __init__(self, rollout: dict[str, Any]) -> None:
        super().__init__()
        self.rollout = rollout

    def compose(self) -> ComposeResult:
        done, total = model.rollout_progress(self.rollout)
        with Vertical():
            title, counts = model.rollout_label(self.rollout)
            yield Label(Content(title), classes="rollout-title")
            yield Label(Content(f"  {counts}"), classes="rollout-counts")
            bar = ProgressBar(total=max(total, 1), show_eta=False, classes="rollout-bar")
            bar.progress = done
            yield bar


class RolloutsView(HubView):
    KINDS = frozenset({"rollouts", "desired"})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.available: bool | None = None
        self.selected: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("loading…", id="rollouts-status")
        yield ListView(id="rollouts-list")
        table: DataTable[str] = DataTable(id="rollout-devices", cursor_type="row")
        table.add_columns("Device", "State", "Reason")
        yield table

    async def load(self) -> None:
        try:
            result = await hub_app(self).session.call("rollouts.list")
        except ApiError as exc:
            if verb_missing(exc):
                self._unavailable()
            else:
                hub_app(self).report_error(f"rollouts.list: {exc.code}", str(exc))
            return
        selected = await self.show_rollouts(result.get("items", []))
        if selected is not None:
            await self._detail(selected)

    def _unavailable(self) -> None:
        self.available = False
        self.query_one("#rollouts-status", Static).update(Content(UNAVAILABLE))
        self.query_one("#rollouts-list").display = False
        self.query_one("#rollout-devices").display = False

    async def show_rollouts(self, items: list[dict[str, Any]]) -> str | None:
        """Render the list; returns the id of the rollout to show the devices of."""
        self.available = True
        status = self.query_one("#rollouts-status", Static)
        status.update(Content(EMPTY if not items else f"{len(items)} rollout(s)"))
        listing = self.query_one("#rollouts-list", ListView)
        listing.display = bool(items)
        self.query_one("#rollout-devices").display = bool(items)
        await listing.clear()
        await listing.extend(RolloutItem(r) for r in items)
        ids = [str(r.get("id")) for r in items]
        if not ids:
            return None
        index = ids.index(self.selected) if self.selected in ids else 0
        listing.index = index
        self.selected = ids[index]
        return ids[index]

    @on(ListView.Highlighted, "#rollouts-list")
    def _highlighted(self, event: ListView.Highlighted) -> None:
        if isinstance(event.item, RolloutItem):
            rollout_id = str(event.item.rollout.get("id"))
            if rollout_id != self.selected:
                self.selected = rollout_id
                self.run_worker(job(self._detail, rollout_id), group="detail", exclusive=True)

    async def _detail(self, rollout_id: str) -> None:
        try:
            rollout = await hub_app(self).session.call("rollouts.get", {"id": rollout_id})
        except ApiError as exc:
            hub_app(self).report_error(f"rollouts.get: {exc.code}", str(exc))
            return
        self.show_devices(rollout)

    def show_devices(self, rollout: dict[str, Any]) -> None:
        table: DataTable[str] = self.query_one("#rollout-devices", DataTable)
        table.clear()
        for device, state, reason in model.rollout_devices(rollout):
            table.add_row(device, state, reason or "-")
