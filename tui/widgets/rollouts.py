"""Rollouts: one progress bar per rollout, the selected rollout's devices with reasons, and
start / pause / resume / abort, each confirmed with the number of devices it touches.

Designed against ``rollouts.list`` / ``rollouts.get`` (issue 5). A hub without them answers
``not_found`` for the verb; the view then says so plainly instead of failing.
"""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import DataTable, Label, ListItem, ListView, ProgressBar, Static

from protocol import errors as codes
from tui.client import ApiError
from tui.screens import detail_model as dm
from tui.screens import model
from tui.screens.dialogs import ConfirmScreen, RolloutRequest, RolloutStartScreen
from tui.widgets.base import HubView, call, hub_app, job
from tui.widgets.impact import devices_touched

UNAVAILABLE = "Rollouts are not available on this hub (it does not serve rollouts.list)."
EMPTY = "No rollouts yet. Start one with s (or: signalbeam rollout start BUNDLE@VERSION …)"


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
            state = str(self.rollout.get("state", ""))
            styled = Content(title)
            if dm.state_style(state) and title.endswith(f"[{state}]"):
                styled = styled.stylize(dm.state_style(state), len(title) - len(state) - 1, -1)
            yield Label(styled, classes="rollout-title")
            yield Label(Content(f"  {counts}"), classes="rollout-counts")
            bar = ProgressBar(total=max(total, 1), show_eta=False, classes="rollout-bar")
            bar.progress = done
            yield bar


class RolloutsView(HubView, can_focus=True):
    """Focusable itself: with no rollouts the list is hidden, and ``s`` must still work."""

    KINDS = frozenset({"rollouts", "desired"})
    BINDINGS = [
        Binding("s", "start_rollout", "Start…"),
        Binding("p", "rollout_control('pause')", "Pause"),
        Binding("c", "rollout_control('resume')", "Resume"),
        Binding("x", "rollout_control('abort')", "Abort"),
    ]
    DEFAULT_CSS = """
    RolloutsView #rollout-detail { height: auto; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.available: bool | None = None
        self.selected: str | None = None
        self.rollouts: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Static("loading…", id="rollouts-status")
        yield ListView(id="rollouts-list")
        yield Static("", id="rollout-detail")
        table: DataTable[Any] = DataTable(id="rollout-devices", cursor_type="row")
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
        self.query_one("#rollout-detail").display = False

    async def show_rollouts(self, items: list[dict[str, Any]]) -> str | None:
        """Render the list; returns the id of the rollout to show the devices of."""
        self.available = True
        status = self.query_one("#rollouts-status", Static)
        status.update(Content(EMPTY if not items else f"{len(items)} rollout(s)"))
        listing = self.query_one("#rollouts-list", ListView)
        listing.display = bool(items)
        self.query_one("#rollout-devices").display = bool(items)
        self.query_one("#rollout-detail").display = bool(items)
        self.rollouts = {str(r.get("id")): r for r in items}
        if not items and (self.app.focused is None or self.app.focused is listing):
            self.focus()
        elif items and self.app.focused is self:
            listing.focus()  # the first rollout appeared: the arrows move through the list
        await listing.clear()
        await listing.extend(RolloutItem(r) for r in items)
        ids = [str(r.get("id")) for r in items]
        if not ids:
            return None
        index = ids.index(self.selected) if self.selected in ids else 0
        listing.index = index
        self.selected = ids[index]
        self.refresh_bindings()  # pause/resume/abort follow the selected rollout's state
        return ids[index]

    @on(ListView.Highlighted, "#rollouts-list")
    def _highlighted(self, event: ListView.Highlighted) -> None:
        if isinstance(event.item, RolloutItem):
            rollout_id = str(event.item.rollout.get("id"))
            if rollout_id != self.selected:
                self.selected = rollout_id
                self.refresh_bindings()
                self.run_worker(job(self._detail, rollout_id), group="detail", exclusive=True)

    async def _detail(self, rollout_id: str) -> None:
        try:
            rollout = await hub_app(self).session.call("rollouts.get", {"id": rollout_id})
        except ApiError as exc:
            hub_app(self).report_error(f"rollouts.get: {exc.code}", str(exc))
            return
        self.show_devices(rollout)

    def show_devices(self, rollout: dict[str, Any]) -> None:
        rid = str(rollout.get("id"))
        self.rollouts[rid] = {**self.rollouts.get(rid, {}), **rollout}
        wave = rollout.get("wave")
        waves = "not started" if wave is None else f"wave {int(wave) + 1} of {rollout.get('waves')}"
        detail = (
            f"{rollout.get('target', '-')} · {waves} · canary {rollout.get('canary_percent', 0)}% "
            f"· max failures {rollout.get('max_failures', 0)}"
        )
        if rollout.get("reason"):
            detail += f"\n{rollout['reason']}"
        self.query_one("#rollout-detail", Static).update(Content(detail))
        table: DataTable[Any] = self.query_one("#rollout-devices", DataTable)
        table.clear()
        for device, state, reason in model.rollout_devices(rollout):
            table.add_row(device, dm.styled(state), reason or "-")

    # --- write actions ---------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not dm.write_allowed(action, bool(getattr(hub_app(self), "read_only", False))):
            return False
        if action == "rollout_control" and parameters:
            rollout = self.rollouts.get(self.selected or "")
            state = str((rollout or {}).get("state", ""))
            return True if dm.rollout_allows(state, str(parameters[0])) else None
        return True

    def action_start_rollout(self) -> None:
        self.run_worker(job(self._start_form), group="start", exclusive=True)

    async def _start_form(self) -> None:
        refs = await bundle_refs(self)
        if refs is None:
            return
        if not refs:
            self.notify("push a bundle first", title="rollout", severity="warning")
            return

        def filled(req: RolloutRequest | None) -> None:
            if req is not None:
                self.run_worker(job(self._confirm_start, req), group="start", exclusive=True)

        self.app.push_screen(RolloutStartScreen(refs), filled)

    async def _confirm_start(self, req: RolloutRequest) -> None:
        go_on, dry = await devices_touched(self, "rollouts.start", req.body())
        if not go_on:
            return
        question = dm.rollout_question(
            req.bundle, req.target, req.canary_percent, req.max_failures, dry
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(job(self._start, req), group="start")

        self.app.push_screen(ConfirmScreen(question), answered)

    async def _start(self, req: RolloutRequest) -> None:
        rollout = await call(self, "rollouts.start", req.body())
        if rollout is None:
            return
        self.selected = str(rollout.get("id"))
        total = sum(model.rollout_counts(rollout).values())
        self.notify(
            f"rollout {self.selected} of {req.bundle} to {req.target} started: {total} device(s)",
            title="rollout started",
            markup=False,
        )
        self.reload()

    def action_rollout_control(self, action: str) -> None:
        rollout = self.rollouts.get(self.selected or "")
        if rollout is None:
            return
        rid = str(rollout.get("id"))

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(job(self._control, action, rid), group="control")

        self.app.push_screen(ConfirmScreen(dm.rollout_action_question(action, rollout)), answered)

    async def _control(self, action: str, rollout_id: str) -> None:
        result = await call(self, f"rollouts.{action}", {"id": rollout_id})
        if result is not None:
            self.notify(
                f"rollout {rollout_id}: {result.get('state')}",
                title=f"rollout {action}",
                markup=False,
            )
            self.reload()


async def bundle_refs(view: HubView) -> list[str] | None:
    """Every ``bundle@version`` on the hub, newest versions first per bundle; None on error."""
    bundles = await call(view, "bundles.list")
    if bundles is None:
        return None
    refs: list[str] = []
    for b in bundles.get("items", []):
        versions = await call(view, "bundles.versions", {"name": b["name"]})
        if versions is None:
            return None
        refs += [f"{b['name']}@{v['version']}" for v in versions.get("items", [])]
    return refs
