"""Assign: pick a target (device:ID, group:NAME, tag:NAME) and a bundle@version, confirm,
call ``assign``; the current assignments below, with unassign."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.suggester import SuggestFromList
from textual.widgets import Button, DataTable, Input, Select, Static

from protocol.api import TARGET_KINDS
from tui.dialogs import ConfirmScreen
from tui.models import confirm as cm
from tui.widgets.base import HubView, call, hub_app, job
from tui.widgets.impact import count_target, devices_touched

RULE = "Most specific wins: device > group > tag; between equals, the newest."


def target_problem(target: str) -> str | None:
    """Why a typed target cannot be right, before asking the hub (which checks it again)."""
    kind, sep, name = target.partition(":")
    if not sep or kind not in TARGET_KINDS or not name:
        return f"target must be device:ID, group:NAME or tag:NAME, got {target!r}"
    return None


class AssignView(HubView):
    KINDS = frozenset({"bundles", "assignments", "groups", "devices"})
    BINDINGS = [Binding("u", "unassign", "Unassign")]

    def compose(self) -> ComposeResult:
        with Horizontal(id="assign-form"):
            yield Input(placeholder="device:ID, group:NAME or tag:NAME", id="assign-target")
            yield Select[str]([], prompt="bundle@version", id="assign-bundle")
            yield Button("Assign…", variant="primary", id="assign-go")
        yield Static(Content(RULE), id="assign-rule")
        table: DataTable[str] = DataTable(id="assignments-table", cursor_type="row")
        table.add_columns("Target", "Bundle", "Assigned (UTC)")
        yield table

    async def load(self) -> None:
        bundles = await call(self, "bundles.list")
        if bundles is None:
            return  # keep what the form shows; the failure is already a notification
        refs: list[str] = []
        for b in bundles.get("items", []):
            versions = await call(self, "bundles.versions", {"name": b["name"]})
            if versions is None:
                return
            refs += [f"{b['name']}@{v['version']}" for v in versions.get("items", [])]
        select: Select[str] = self.query_one("#assign-bundle", Select)
        current = select.value
        select.set_options([(r, r) for r in refs])
        if isinstance(current, str) and current in refs:
            select.value = current
        await self._suggestions()
        await self._assignments()

    async def _suggestions(self) -> None:
        targets: list[str] = []
        devices = await call(self, "devices.list", {"limit": 1000})
        groups = await call(self, "groups.list")
        if devices is None or groups is None:
            return
        tags: set[str] = set()
        for d in devices.get("items", []):
            targets.append(f"device:{d['id']}")
            tags.update(d.get("tags") or [])
        targets += [f"group:{g['name']}" for g in groups.get("items", [])]
        targets += [f"tag:{t}" for t in sorted(tags)]
        self.query_one("#assign-target", Input).suggester = SuggestFromList(targets)

    async def _assignments(self) -> None:
        result = await call(self, "assignments.list")
        if result is None:
            return
        table: DataTable[str] = self.query_one("#assignments-table", DataTable)
        table.clear()
        for a in result.get("items", []):
            created = str(a.get("created_at", ""))[:16].replace("T", " ")
            table.add_row(a["target"], f"{a['bundle']}@{a['version']}", created, key=a["target"])

    def prefill(self, target: str) -> None:
        self.query_one("#assign-target", Input).value = target

    @on(Button.Pressed, "#assign-go")
    @on(Input.Submitted, "#assign-target")
    def _assign(self) -> None:
        target = self.query_one("#assign-target", Input).value.strip()
        bundle = self.query_one("#assign-bundle", Select).value
        problem = target_problem(target)
        if problem is None and not isinstance(bundle, str):
            problem = "pick a bundle@version first"
        if problem is not None:
            self.notify(problem, title="assign", severity="error", markup=False)
            return
        assert isinstance(bundle, str)
        if self.read_only():
            self.notify("read-only mode: assigning is off", title="assign", severity="warning")
            return
        self.run_worker(job(self._ask_assign, target, bundle), group="assign", exclusive=True)

    async def _ask_assign(self, target: str, bundle: str) -> None:
        go_on, dry = await devices_touched(self, "assign", {"target": target, "bundle": bundle})
        if not go_on:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.run_worker(job(self._do_assign, target, bundle), group="assign")

        self.app.push_screen(ConfirmScreen(cm.assign_question(bundle, target, dry)), confirmed)

    def read_only(self) -> bool:
        return bool(getattr(hub_app(self), "read_only", False))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return cm.write_allowed(action, self.read_only())

    def on_mount(self) -> None:
        # Greyed rather than hidden: the form still shows what could be assigned.
        self.query_one("#assign-go", Button).disabled = self.read_only()

    async def _do_assign(self, target: str, bundle: str) -> None:
        result = await call(self, "assign", {"target": target, "bundle": bundle})
        if result is None:
            return
        changed: list[str] = result.get("desired_changed", [])
        detail = f"desired state changed on {len(changed)} device(s)"
        if changed:
            detail += ": " + ", ".join(changed[:5]) + (" …" if len(changed) > 5 else "")
        self.notify(f"{bundle} assigned to {target}; {detail}", title="assigned", markup=False)
        await self._assignments()

    def action_unassign(self) -> None:
        table: DataTable[str] = self.query_one("#assignments-table", DataTable)
        if not table.row_count:
            return
        target = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if not target:
            return

        self.run_worker(job(self._ask_unassign, target), group="assign", exclusive=True)

    async def _ask_unassign(self, target: str) -> None:
        # What the hub would tell about the devices under this target; unassigning sends
        # them back to their next most specific assignment (or nothing).
        dry = await count_target(self, target)
        kind, _, name = target.partition(":")
        question = f"Remove the assignment of {kind} {name} — {cm.impact(dry)}?"

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.run_worker(job(self._do_unassign, target), group="assign")

        self.app.push_screen(ConfirmScreen(question), confirmed)

    async def _do_unassign(self, target: str) -> None:
        if await call(self, "unassign", {"target": target}) is not None:
            self.notify(f"{target} unassigned", title="unassigned", markup=False)
            await self._assignments()
