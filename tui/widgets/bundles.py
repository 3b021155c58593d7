"""Bundles: the bundle list, one bundle's versions, and a version's spec as YAML."""

from __future__ import annotations

from typing import Any

import yaml
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, TextArea

from tui.widgets.base import HubView, call, job

EMPTY = "No bundles yet. Push one with: signalbeam bundle push FILE"


def compact(value: Any) -> Any:
    """The spec without its unset (null) fields, which only add noise to reading it."""
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [compact(v) for v in value]
    return value


class BundlesView(HubView):
    KINDS = frozenset({"bundles"})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bundle: str | None = None
        self.version: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="bundles-left"):
                bundles: DataTable[str] = DataTable(id="bundles-table", cursor_type="row")
                bundles.add_columns("Bundle", "Latest", "#")
                yield bundles
                versions: DataTable[str] = DataTable(id="versions-table", cursor_type="row")
                versions.add_columns("Version", "Created (UTC)")
                yield versions
            yield TextArea(EMPTY, id="bundle-spec", read_only=True, soft_wrap=False)

    async def load(self) -> None:
        result = await call(self, "bundles.list")
        if result is None:
            return
        items = result.get("items", [])
        table: DataTable[str] = self.query_one("#bundles-table", DataTable)
        table.clear()
        for b in items:
            table.add_row(
                str(b["name"]), str(b.get("latest") or "-"), str(b.get("versions")), key=b["name"]
            )
        if not items:
            self.query_one("#bundle-spec", TextArea).text = EMPTY
            return
        names = [str(b["name"]) for b in items]
        name = self.bundle if self.bundle in names else names[0]
        table.move_cursor(row=names.index(name))
        await self._versions(name)

    @on(DataTable.RowHighlighted, "#bundles-table")
    def _bundle_highlighted(self, event: DataTable.RowHighlighted) -> None:
        name = event.row_key.value
        if name and name != self.bundle:
            self.run_worker(job(self._versions, name), group="versions", exclusive=True)

    @on(DataTable.RowHighlighted, "#versions-table")
    def _version_highlighted(self, event: DataTable.RowHighlighted) -> None:
        version = event.row_key.value
        if self.bundle and version and version != self.version:
            self.run_worker(job(self._spec, self.bundle, version), group="spec", exclusive=True)

    async def _versions(self, name: str) -> None:
        result = await call(self, "bundles.versions", {"name": name})
        if result is None:
            return
        changed = name != self.bundle
        self.bundle = name
        table: DataTable[str] = self.query_one("#versions-table", DataTable)
        table.clear()
        items = result.get("items", [])
        for v in items:
            created = str(v.get("created_at", ""))[:16].replace("T", " ")
            table.add_row(str(v["version"]), created, key=v["version"])
        versions = [v["version"] for v in items]
        if not changed and self.version in versions:
            table.move_cursor(row=versions.index(self.version))
        elif versions:
            await self._spec(name, versions[0])

    async def _spec(self, name: str, version: str) -> None:
        doc = await call(self, "bundles.get", {"name": name, "version": version})
        if doc is None:
            return
        self.version = version
        header = f"# {name}@{version}\n# {doc.get('content_hash')}\n"
        body = yaml.safe_dump(compact(doc.get("spec")), sort_keys=False, default_flow_style=False)
        self.query_one("#bundle-spec", TextArea).text = header + body
