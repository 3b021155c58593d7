"""Rollouts: one progress bar per rollout, the selected rollout's phases (phase n/N, devices
done/failed against the limit, bake time left, the pause reason) and devices with reasons,
and start / pause / resume / abort, each confirmed with the number of devices it touches.

Designed against ``rollouts.list`` / ``rollouts.get`` (issue 5). A hub without them answers
``not_found`` for the verb; the view then says so plainly instead of failing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import DataTable, Label, ListItem, ListView, ProgressBar, Static

from protocol import errors as codes
from tui.client import ApiError
from tui.dialogs import ConfirmScreen, RolloutRequest, RolloutStartScreen
from tui.models import common as model
from tui.models import confirm as cm
from tui.models import detail as dm
from tui.output import human_duration
from tui.widgets.base import HubView, call, hub_app, job, show_rows
from tui.widgets.impact import devices_touched

UNAVAILABLE = "Rollouts are not available on this hub (it does not serve rollouts.list)."
EMPTY = "No rollouts yet. Start one with s (or: signalbeam rollout start BUNDLE@VERSION …)"


PHASE_MARKS = {"done": "✓", "running": "▶", "baking": "◷", "pending": "·"}


def phase_summary(rollout: Mapping[str, Any], elapsed: float = 0.0) -> str:
    """The detail above the device table: target, phase n/N, steps, bake, failure limit;
    the reason (why it paused); then one line per phase with its devices done and failed
    (against what the hub allows it) and, while it bakes, the time left — ``elapsed``
    seconds since the hub said how much. Every number is the hub's (phases count from 1,
    the allowed failures are its computation; a phase's devices deferred by their lock or
    window are counted on its line and the hub's reason names the first); pure, so it is
    unit-tested."""
    phases = [p for p in rollout.get("phases") or [] if isinstance(p, Mapping)]
    n = rollout.get("phase_count") or len(phases)
    current = rollout.get("phase")
    head = f"{rollout.get('target', '-')} · " + (
        "not started" if current is None else f"phase {current}/{n}"
    )
    if rollout.get("steps"):
        head += f" · steps {rollout['steps']}"
    if rollout.get("bake"):
        head += f" · bake {human_duration(float(rollout['bake']))}"
    limit = rollout.get("max_failures", 0)
    head += f" · max failures {limit}"
    if isinstance(limit, str) and limit.endswith("%"):
        head += f" ({rollout.get('max_failures_allowed', 0)} of {rollout.get('total', 0)})"
    lines = [head]
    if rollout.get("reason"):
        lines.append(str(rollout["reason"]))
    for p in phases if len(phases) > 1 else []:
        state = str(p.get("state", "?"))
        line = (
            f"{PHASE_MARKS.get(state, ' ')} phase {p.get('number')}/{n}  {state:<8}"
            f"{p.get('done', 0)}/{p.get('size', 0)} done · {p.get('failed', 0)} failed"
            f" (max {p.get('max_failures', 0)})"
        )
        if p.get("deferred"):  # held by the site (lock, window): the reason line names them
            line += f" · {p['deferred']} deferred"
        if state == "baking":
            left = max(0.0, float(p.get("bake_left") or 0) - elapsed)
            line += f" · bake {human_duration(left)} left"
        lines.append(line)
    return "\n".join(lines)


def baking(rollout: Mapping[str, Any]) -> bool:
    return any(
        isinstance(p, Mapping) and p.get("state") == "baking" for p in rollout.get("phases") or []
    )


def verb_missing(exc: ApiError) -> bool:
    """The hub does not know the verb at all (an older hub), as opposed to a missing rollout."""
    return exc.code == codes.NOT_FOUND and (exc.field == "verb" or "verb" in exc.message)


class RolloutItem(ListItem):
    """One rollout: title, counts and a progress bar, updated in place by ``show``."""

    DEFAULT_CSS = """
    RolloutItem { height: 3; }
    RolloutItem Vertical { height: 3; }
    RolloutItem .rollout-bar { padding-left: 2; }
    """

    def __init__(self, rollout: dict[str, Any]) -> None:
        super().__init__()
        self.rollout = rollout
        self.rollout_id = str(rollout.get("id"))
        self._title = Label(classes="rollout-title")
        self._counts = Label(classes="rollout-counts")
        self._bar = ProgressBar(total=1, show_eta=False, classes="rollout-bar")
        self.show(rollout)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield self._title
            yield self._counts
            yield self._bar

    def show(self, rollout: dict[str, Any]) -> None:
        """Rewrite the labels and the bar (no remount: the list never blinks)."""
        self.rollout = rollout
        title, counts = model.rollout_label(rollout)
        state = str(rollout.get("state", ""))
        styled = Content(title)
        if dm.state_style(state) and title.endswith(f"[{state}]"):
            styled = styled.stylize(dm.state_style(state), len(title) - len(state) - 1, -1)
        self._title.update(styled)
        if rollout.get("phase") is not None and (rollout.get("phase_count") or 0) > 1:
            counts = f"phase {rollout['phase']}/{rollout['phase_count']} · {counts}"
        self._counts.update(Content(f"  {counts}"))
        done, total = model.rollout_progress(rollout)
        self._bar.update(total=max(total, 1), progress=done)


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
        self._items: dict[str, RolloutItem] = {}  # what the list shows, by rollout id
        self._devices_of: str | None = None  # the rollout whose devices the table shows
        self._shown_at = 0.0  # when the detail's rollout came from the hub (monotonic)

    def on_mount(self) -> None:
        # The bake time left counts down between the hub's answers; once it is over the
        # next phase starts, and its notice reloads the view.
        self.set_interval(1.0, self._count_down)

    def _count_down(self) -> None:
        rollout = self.rollouts.get(self._devices_of or "")
        if rollout is not None and baking(rollout):
            self._show_detail(rollout)

    def compose(self) -> ComposeResult:
        yield Static("loading…", id="rollouts-status")
        yield ListView(id="rollouts-list")
        yield Static("", id="rollout-detail")
        table: DataTable[Any] = DataTable(id="rollout-devices", cursor_type="row")
        for key, label in (("device", "Device"), ("state", "State"), ("reason", "Reason")):
            table.add_column(label, key=key)
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
        selected = self.show_rollouts(result.get("items", []))
        if selected is not None:
            await self._detail(selected)

    def _unavailable(self) -> None:
        self.available = False
        self.query_one("#rollouts-status", Static).update(Content(UNAVAILABLE))
        self.query_one("#rollouts-list").display = False
        self.query_one("#rollout-devices").display = False
        self.query_one("#rollout-detail").display = False

    def show_rollouts(self, items: list[dict[str, Any]]) -> str | None:
        """Show ``items`` (newest first) in place, by rollout id: existing entries are
        rewritten, new ones mounted at their place, gone ones removed; the highlight stays on
        its rollout. Nothing here awaits the DOM, so a newer load cancelling this one's
        worker can only ever interrupt a hub call, never a half-done list (a cancelled
        mount or removal would reach Textual's message loop and end the app). Returns the
        id of the rollout to show the devices of."""
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
        ids = list(self.rollouts)
        gone = [rid for rid in self._items if rid not in self.rollouts]
        for rid in gone:
            self._items.pop(rid).remove()
        previous: RolloutItem | None = None
        for rid in ids:
            item = self._items.get(rid)
            if item is not None:
                item.show(self.rollouts[rid])
            else:
                item = self._items[rid] = RolloutItem(self.rollouts[rid])
                if previous is not None:
                    listing.mount(item, after=previous)
                else:
                    first = next((i for r, i in self._items.items() if r != rid), None)
                    listing.mount(item, before=first) if first else listing.mount(item)
            previous = item
        self._items = {rid: self._items[rid] for rid in ids}  # display order
        if not ids:
            return None
        self.selected = self.selected if self.selected in ids else ids[0]
        self._keep_highlight()
        if gone:  # their removal is still pending: place the highlight again once it is done
            self.call_after_refresh(self._keep_highlight)
        self.refresh_bindings()  # pause/resume/abort follow the selected rollout's state
        return self.selected

    def _keep_highlight(self) -> None:
        """The highlight stays on the selected rollout when entries came or went around it."""
        item = self._items.get(self.selected or "")
        listing = self.query_one("#rollouts-list", ListView)
        if item is not None and item in listing.children:
            index = listing.children.index(item)
            if listing.index != index:
                listing.index = index

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
        self._shown_at = time.monotonic()
        self._show_detail(self.rollouts[rid])
        table: DataTable[Any] = self.query_one("#rollout-devices", DataTable)
        if self._devices_of != rid:  # another rollout: its own rows (the only full redraw)
            table.clear()
            self._devices_of = rid
        rows = model.rollout_devices(rollout)
        show_rows(table, [(d, (d, dm.styled(s), r or "-")) for d, s, r in rows])

    def _show_detail(self, rollout: Mapping[str, Any]) -> None:
        elapsed = time.monotonic() - self._shown_at
        self.query_one("#rollout-detail", Static).update(Content(phase_summary(rollout, elapsed)))

    # --- write actions ---------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not cm.write_allowed(action, bool(getattr(hub_app(self), "read_only", False))):
            return False
        if action == "rollout_control" and parameters:
            rollout = self.rollouts.get(self.selected or "")
            state = str((rollout or {}).get("state", ""))
            return True if cm.rollout_allows(state, str(parameters[0])) else None
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
        question = cm.rollout_question(
            req.bundle, req.target, req.phases, req.bake, req.max_failures, dry
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

        self.app.push_screen(ConfirmScreen(cm.rollout_action_question(action, rollout)), answered)

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
