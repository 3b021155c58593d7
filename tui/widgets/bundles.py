"""Bundles: the bundle list, one bundle's versions, a version's spec as YAML, the devices
that run it, and pushing a bundle file."""

from __future__ import annotations

from typing import Any

import yaml
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import DataTable, Static, TextArea

from protocol import errors as codes
from tui.client import ApiError
from tui.dialogs import PushScreen
from tui.models import confirm as cm
from tui.models import detail as dm
from tui.widgets.base import HubView, call, hub_app, job

EMPTY = "No bundles yet. Push one with p (or: signalbeam bundle push FILE)"
RUNNING_SHOWN = 100  # devices listed under a version; the count says when there are more


def compact(value: Any) -> Any:
    """The spec without its unset (null) fields, which only add noise to reading it."""
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [compact(v) for v in value]
    return value


class BundlesView(HubView):
    # devices/reported: which devices run the highlighted version moves with their reports
    KINDS = frozenset({"bundles", "reported", "devices"})
    BINDINGS = [Binding("p", "push", "Push bundle")]
    DEFAULT_CSS = """
    BundlesView #bundle-right { width: 1fr; }
    BundlesView #bundle-running { height: 1; padding: 0 1; background: $boost; }
    BundlesView #bundle-devices { height: 8; }
    """

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
            with Vertical(id="bundle-right"):
                yield TextArea(EMPTY, id="bundle-spec", read_only=True, soft_wrap=False)
                yield Static("", id="bundle-running")
                devices: DataTable[Any] = DataTable(id="bundle-devices", cursor_type="row")
                devices.add_columns("Device", "Status", "Running")
                yield devices

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
        if not changed and self.version is not None and self.version in versions:
            table.move_cursor(row=versions.index(self.version))
            await self._running_devices(name, self.version)
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
        await self._running_devices(name, version)

    async def _running_devices(self, name: str, version: str) -> None:
        """Which devices report running this version (``devices.list`` ``running``)."""
        ref = f"{name}@{version}"
        note = self.query_one("#bundle-running", Static)
        table: DataTable[Any] = self.query_one("#bundle-devices", DataTable)
        try:
            page = await hub_app(self).session.call(
                "devices.list", {"running": ref, "limit": RUNNING_SHOWN}
            )
        except ApiError as exc:
            table.clear()
            if exc.code == codes.INVALID and exc.field == "running":
                note.update(Content("this hub cannot tell which devices run a version"))
            else:
                note.update(Content(f"devices running {ref}: {exc}"))
            return
        self.show_running(ref, page)

    def show_running(self, ref: str, page: dict[str, Any]) -> None:
        items = page.get("items", [])
        more = "+" if page.get("next_cursor") else ""
        text = f"{len(items)}{more} device(s) run {ref}" if items else f"no device runs {ref}"
        self.query_one("#bundle-running", Static).update(Content(text))
        table: DataTable[Any] = self.query_one("#bundle-devices", DataTable)
        table.clear()
        for d in items:
            status = str(d.get("status") or "-")
            table.add_row(str(d.get("id")), dm.styled(status), str(d.get("running") or ref))

    # --- push ------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return cm.write_allowed(action, bool(getattr(hub_app(self), "read_only", False)))

    def action_push(self) -> None:
        def chosen(path: str | None) -> None:
            if path:
                self.run_worker(job(self._push, path), group="push", exclusive=True)

        self.app.push_screen(PushScreen(), chosen)

    async def _push(self, path: str) -> None:
        problem, spec = load_bundle(path)
        if spec is None:
            self.notify(problem, title="push: invalid bundle", severity="error", markup=False)
            return
        result = await call(self, "bundles.push", {"spec": spec})
        if result is None:
            return
        ref = f"{result.get('bundle')}@{result.get('version')}"
        what = "pushed" if result.get("created") else "already on the hub (same content)"
        self.notify(f"{ref} {what}", title="push", markup=False)
        self.bundle = str(result.get("bundle"))
        self.version = str(result.get("version"))
        await self.load()


def load_bundle(path: str) -> tuple[str, dict[str, Any] | None]:
    """The bundle file validated as the CLI's ``bundle push`` does: (problem, spec|None)."""
    # Imported here: YAML parsing and the bundle schema are only needed when pushing.
    from bundles.errors import BundleError, BundleInvalid
    from bundles.validate import load_file

    try:
        spec = load_file(path)
    except BundleInvalid as exc:
        lines = [
            f"{path}:{e.line}: {e.path}: {e.message}"
            if e.line is not None
            else f"{e.path}: {e.message}"
            for e in exc.errors[:5]
        ]
        more = f"\n… {len(exc.errors) - 5} more" if len(exc.errors) > 5 else ""
        return "\n".join(lines) + more, None
    except (BundleError, OSError) as exc:
        return f"{path}: {exc}", None
    return "", dict(spec.to_dict())
