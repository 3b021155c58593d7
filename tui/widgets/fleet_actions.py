"""What the Fleet's keys do to the devices they apply to (the marked rows, else the
highlighted one): describe, YAML, reconcile, decommission, force update. ``FleetView``
(``fleet.py``) supplies the rows, the marks and the redraw."""

from __future__ import annotations

from typing import Any

from tui.client import ApiError
from tui.dialogs import ConfirmScreen, TextScreen, TypedConfirmScreen
from tui.hub.fleet import FleetSource
from tui.models import detail as dm
from tui.models import fleet as fm
from tui.widgets.base import HubView, call, hub_app, job

DEVICE_WAIT = 4  # seconds the hub waits for each device on reconcile


class FleetActions(HubView):
    """The Fleet's device actions; the view below keeps the state they read."""

    source: FleetSource
    marked: set[str]

    def now(self) -> float:
        raise NotImplementedError

    def targets(self) -> list[str]:
        raise NotImplementedError

    def _highlighted(self) -> str | None:
        raise NotImplementedError

    def _rebuild(self) -> None:
        raise NotImplementedError

    def action_describe(self) -> None:
        device_id = self._highlighted()
        if device_id is not None:
            self.run_worker(job(self._describe, device_id, False), group="describe")

    def action_yaml(self) -> None:
        device_id = self._highlighted()
        if device_id is not None:
            self.run_worker(job(self._describe, device_id, True), group="describe")

    async def _describe(self, device_id: str, as_yaml: bool) -> None:
        device = await call(self, "devices.get", {"id": device_id})
        if device is None:
            return
        self.app.push_screen(TextScreen(*dm.describe_text(device_id, device, as_yaml, self.now())))

    def action_fleet_write(self, action: str) -> None:
        """``g`` reconcile now / ``D`` decommission, on the marked rows (or the highlighted
        one), after a question that counts and names them."""
        ids = self.targets()
        if not ids:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(job(self._fleet_write, action, ids), group="fleet-write")

        self.app.push_screen(ConfirmScreen(fm.fleet_question(action, ids)), answered)

    def action_force_update(self) -> None:
        """``F``: start the assigned version through update locks and maintenance windows,
        on the marked rows (or the highlighted one), after the device count is typed."""
        ids = self.targets()
        if not ids:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(job(self._force_update, ids), group="fleet-write")

        question = fm.fleet_question("force_update", ids)
        self.app.push_screen(TypedConfirmScreen(question, str(len(ids))), answered)

    async def _force_update(self, ids: list[str]) -> None:
        verb = "devices.force_update"
        try:
            await hub_app(self).session.call(verb, {"ids": ids, "confirm": len(ids)})
        except ApiError as exc:
            hub_app(self).report_error(verb, str(exc))
            return
        self.marked.difference_update(ids)
        self._rebuild()
        self.notify(f"forced through locks and windows: {len(ids)} device(s)", title=verb,
                    markup=False)  # fmt: skip

    async def _fleet_write(self, action: str, ids: list[str]) -> None:
        verb = f"devices.{action}"
        body: dict[str, Any] = {"timeout": DEVICE_WAIT} if action == "reconcile" else {}
        failed = await self.source.write_each(hub_app(self).session, verb, ids, body)
        done = len(ids) - len(failed)
        self.marked.difference_update(ids)
        self._rebuild()
        message = f"{action}: {done} of {len(ids)} device(s)"
        if failed:
            message += "; " + "; ".join(failed[:3]) + (" …" if len(failed) > 3 else "")
            hub_app(self).report_error(verb, message)
        else:
            self.notify(message, title=verb, markup=False)
