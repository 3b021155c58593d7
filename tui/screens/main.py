"""The main screen: the fleet, bundles, assign and rollouts views as tabs, the hub banner,
and the `:` command line."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.suggester import Suggester
from textual.widgets import DataTable, Footer, Header, Input, TabbedContent, TabPane

from tui.commands import TABS, CommandError, complete, parse_command
from tui.widgets.assign import AssignView
from tui.widgets.banner import HubBanner
from tui.widgets.bundles import BundlesView
from tui.widgets.fleet import FleetView
from tui.widgets.rollouts import RolloutsView

# What gets the focus on each tab, and where Escape goes from a text box.
FOCUS = {
    "fleet": "#fleet-table",
    "bundles": "#bundles-table",
    "assign": "#assign-target",
    "rollouts": "#rollouts-list",
}
TABLES = {"assign": "#assignments-table"}


class CommandSuggester(Suggester):
    """Completes `:` commands and, after `:dev `, the loaded device ids."""

    def __init__(self, device_ids: Callable[[], Iterable[str]]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.device_ids = device_ids

    async def get_suggestion(self, value: str) -> str | None:
        return complete(value, self.device_ids())


class MainScreen(Screen[None]):
    BINDINGS = [
        # Priority, as `:` below: the next key belongs to the tab it switched to.
        Binding("f", "show_tab('fleet')", "Fleet", priority=True),
        Binding("b", "show_tab('bundles')", "Bundles", priority=True),
        Binding("a", "show_tab('assign')", "Assign", priority=True),
        Binding("r", "show_tab('rollouts')", "Rollouts", priority=True),
        # Priority: the app routes each key to the focus of the moment it arrives, so keys
        # typed right after `:` went to the table and were lost; a priority binding runs as
        # the key arrives and the next keys find the command line focused.
        Binding("colon", "command_line", "Command", key_display=":", priority=True),
        Binding("ctrl+r", "app.reload_all", "Refresh"),
        Binding("q", "app.quit", "Quit"),
        Binding("escape", "leave_input", "Back", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield HubBanner(id="hub-banner")
        # Above the tabs, as k9s has it: in the flow after the tabs it sat under the footer
        # (the tabs take every remaining line), invisible while typing.
        yield Input(
            placeholder=":devices :bundles :assign :rollouts :dev ID :help :q",
            id="command-line",
            select_on_focus=False,  # the `:` stays; typing goes after it
            suggester=CommandSuggester(lambda: self.query_one(FleetView).device_ids()),
        )
        with TabbedContent(initial="fleet", id="tabs"):
            with TabPane("Fleet", id="fleet"):
                yield FleetView(id="fleet-view")
            with TabPane("Bundles", id="bundles"):
                yield BundlesView(id="bundles-view")
            with TabPane("Assign", id="assign"):
                yield AssignView(id="assign-view")
            with TabPane("Rollouts", id="rollouts"):
                yield RolloutsView(id="rollouts-view")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#command-line").display = False
        self.query_one("#fleet-table").focus()

    def action_show_tab(self, tab: str) -> None:
        if tab == "assign":
            self._prefill_assign_target()
        self.query_one("#tabs", TabbedContent).active = tab
        self._focus_tab(tab)

    def _focus_tab(self, tab: str, table: bool = False) -> None:
        """The tab's main widget; with no rollouts the hidden list cannot take the keys, so
        the rollouts view itself does (``s`` starts one)."""
        target = self.query_one(TABLES.get(tab, FOCUS[tab]) if table else FOCUS[tab])
        if not target.display and tab == "rollouts":
            target = self.query_one("#rollouts-view")
        self.set_focus(target)  # at once: keys typed right after the tab key go there

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # `:` or a tab letter typed into a text box (a filter `tag:lab`) is text.
        return not (action in ("command_line", "show_tab") and isinstance(self.focused, Input))

    def action_command_line(self) -> None:
        line = self.query_one("#command-line", Input)
        line.value = ":"
        line.cursor_position = 1
        line.display = True
        # Focused now, not after the queued keys: `focus()` defers, and a fast `:ro` sent
        # the `r` to the tabs (the Rollouts tab) instead of the command line.
        self.set_focus(line)

    @on(Input.Submitted, "#command-line")
    def _command_submitted(self, event: Input.Submitted) -> None:
        try:
            command = parse_command(event.value)
        except CommandError as exc:
            self.notify(str(exc), title="command", severity="error", markup=False)
            return
        # Hidden without refocusing first: a focus queued for the old tab's table would land
        # after the new tab's and pull the tabs back.
        self._close_command_line(refocus=command.name not in TABS)
        run = getattr(self.app, "run_command", None)
        if run is not None:
            run(command)

    def _close_command_line(self, refocus: bool = True) -> None:
        line = self.query_one("#command-line", Input)
        line.value = ""
        line.display = False
        if refocus:
            self.action_leave_input()

    def action_leave_input(self) -> None:
        """Escape from a text box back to the tab's table, where the tab keys work again."""
        line = self.query_one("#command-line", Input)
        if line.display and self.focused is line:
            self._close_command_line()
            return
        tab = self.query_one("#tabs", TabbedContent).active
        if tab in FOCUS:
            self._focus_tab(tab, table=True)

    def _prefill_assign_target(self) -> None:
        """Coming from the fleet with a device highlighted, offer that device as the target."""
        target = self.query_one("#assign-target", Input)
        table: DataTable[str] = self.query_one("#fleet-table", DataTable)
        if target.value or not table.row_count:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if key and self.query_one("#tabs", TabbedContent).active == "fleet":
            self.query_one(AssignView).prefill(f"device:{key}")
