"""What every hub-backed view shares: API calls that turn errors into notifications, and
debounced reloads when change notices arrive."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol, cast

from textual.coordinate import Coordinate
from textual.css.query import NoMatches
from textual.widget import Widget
from textual.widgets import DataTable

from tui.client import ApiError
from tui.hub.session import HubSession


def job(fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> Any:
    """Work for ``run_worker``.

    A callable, not a coroutine object: an exclusive worker replaced before it started
    would leave a never-awaited coroutine behind (a warning). A view removed while its
    work waited on the hub (screen popped, app quitting) finds its widgets gone; that
    ends the work quietly instead of failing the app. Typed ``Any`` because Textual's
    ``WorkType`` does not accept this under mypy.
    """

    async def run() -> None:
        try:
            await fn(*args)
        except NoMatches:
            pass

    return run


class HubApp(Protocol):
    session: HubSession
    read_only: bool  # --read-only, or a readonly API key: write actions hidden or greyed

    def report_error(self, title: str, message: str) -> None: ...


def hub_app(widget: Widget) -> HubApp:
    return cast(HubApp, widget.app)


async def call(
    widget: Widget, verb: str, body: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """One API call; on failure a notification with the API's message and ``None``."""
    try:
        return await hub_app(widget).session.call(verb, body)
    except ApiError as exc:
        hub_app(widget).report_error(f"{verb}: {exc.code}", str(exc))
        return None


class HubView(Widget):
    """A view that loads from the hub and reloads on change notices of its ``KINDS``."""

    KINDS: frozenset[str] = frozenset()  # change kinds that matter; empty = every kind
    IGNORED: frozenset[str] = frozenset()  # kinds that never matter, when KINDS is empty
    # Seconds from the first notice of a burst to the reload: the whole burst becomes one
    # reload, and a busy fleet's notices cannot reload a view more often than this.
    RELOAD_DELAY = 0.3

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._reload_pending = False
        self.loads = 0  # finished loads; lets tests wait without sleeping blindly

    def hub_notice(self, doc: Mapping[str, Any]) -> None:
        """A change notice, whole (``kind``, ``action``, ids...). Views that can use the ids
        override this; by default the notice's kind goes to ``hub_changed``."""
        self.hub_changed(str(doc.get("kind", "")))

    def hub_changed(self, kind: str) -> None:
        if (self.KINDS and kind not in self.KINDS) or kind in self.IGNORED:
            return
        if not self._reload_pending:
            self._reload_pending = True
            self.set_timer(self.RELOAD_DELAY, self._debounced)

    def _debounced(self) -> None:
        self._reload_pending = False
        self.reload()

    def reload(self) -> None:
        # exclusive: a newer reload cancels one still waiting on the hub
        self.run_worker(job(self._load_and_count), group="load", exclusive=True)

    async def _load_and_count(self) -> None:
        await self.load()
        self.loads += 1

    async def load(self) -> None:
        raise NotImplementedError


def show_rows(
    table: DataTable[Any], rows: list[tuple[str, tuple[Any, ...]]], key_column: str = "device"
) -> None:
    """Make ``table`` show ``rows`` ((key, cells), in order) in place, by key: changed cells
    are rewritten with ``update_cell_at``, new rows added, gone rows removed, so the table is
    never empty while it refreshes (as the Fleet table)."""
    keys = [k for k, _ in rows]
    wanted = set(keys)
    for gone in [k for k in table.rows if k.value not in wanted]:
        table.remove_row(gone)
    for key, cells in rows:
        if key in table.rows:
            index = table.get_row_index(key)
            for column, cell in enumerate(cells):
                if str(table.get_cell_at(Coordinate(index, column))) != str(cell):
                    table.update_cell_at(Coordinate(index, column), cell)
        else:
            table.add_row(*cells, key=key)
    if [r.key.value for r in table.ordered_rows] != keys:  # a row came in the middle
        order = {k: i for i, k in enumerate(keys)}
        table.sort(key_column, key=lambda cell: order.get(str(cell), len(order)))
