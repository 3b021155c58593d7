"""The main screen: the fleet, bundles, assign and rollouts views as tabs."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, TabbedContent, TabPane

from tui.widgets.assign import AssignView
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


class MainScreen(Screen[None]):
    BINDINGS = [
        Binding("f", "show_tab('fleet')", "Fleet"),
        Binding("b", "show_tab('bundles')", "Bundles"),
        Binding("a", "show_tab('assign')", "Assign"),
        Binding("r", "show_tab('rollouts')", "Rollouts"),
        Binding("ctrl+r", "app.reload_all", "Refresh"),
        Binding("q", "app.quit", "Quit"),
        Binding("escape", "leave_input", "Leave input", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
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
        self.query_one("#fleet-table").focus()

    def action_show_tab(self, tab: str) -> None:
        if tab == "assign":
            self._prefill_assign_target()
        self.query_one("#tabs", TabbedContent).active = tab
        self.query_one(FOCUS[tab]).focus()

    def action_leave_input(self) -> None:
        """Escape from a text box back to the tab's table, where the tab keys work again."""
        tab = self.query_one("#tabs", TabbedContent).active
        if tab in FOCUS:
            self.query_one(TABLES.get(tab, FOCUS[tab])).focus()

    def _prefill_assign_target(self) -> None:
        """Coming from the fleet with a device highlighted, offer that device as the target."""
        target = self.query_one("#assign-target", Input)
        table: DataTable[str] = self.query_one("#fleet-table", DataTable)
        if target.value or not table.row_count:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if key and self.query_one("#tabs", TabbedContent).active == "fleet":
            self.query_one(AssignView).prefill(f"device:{key}")
