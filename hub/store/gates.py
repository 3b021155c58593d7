"""Maintenance windows per device or group, and operators' overrides through update gates."""

from __future__ import annotations

import json
from typing import Any

from hub.desired import Membership
from hub.gates import windows_for
from hub.store.base import StoreBase
from hub.timeutil import now_iso


class GateStore(StoreBase):
    def set_windows(self, kind: str, target: str, windows: list[str] | None, by: str) -> bool:
        """Set (a list, maybe empty: any time) or clear (None: inherit) the windows of a
        device or group. Returns whether anything changed."""
        with self.tx() as c:
            old = self.scalar(
                "SELECT windows FROM maintenance_windows WHERE target_kind = ? AND target = ?",
                (kind, target),
            )
            new = None if windows is None else json.dumps(windows)
            if old == new:
                return False
            if new is None:
                c.execute(
                    "DELETE FROM maintenance_windows WHERE target_kind = ? AND target = ?",
                    (kind, target),
                )
            else:
                c.execute(
                    "INSERT OR REPLACE INTO maintenance_windows"
                    " (target_kind, target, windows, set_by, set_at) VALUES (?, ?, ?, ?, ?)",
                    (kind, target, new, by, now_iso()),
                )
            return True

    def list_windows(self) -> list[dict[str, Any]]:
        return [
            {**r, "windows": json.loads(r["windows"])}
            for r in self.rows(
                "SELECT target_kind, target, windows, set_by, set_at FROM maintenance_windows"
                " ORDER BY target_kind, target"
            )
        ]

    def windows_of(self, members: list[Membership]) -> dict[str, tuple[str, ...] | None]:
        """Each device's windows by ``hub.gates.windows_for`` (None: the bundle's apply)."""
        dev: dict[str, list[str]] = {}
        grp: dict[str, list[str]] = {}
        for r in self.rows("SELECT target_kind, target, windows FROM maintenance_windows"):
            (dev if r["target_kind"] == "device" else grp)[r["target"]] = json.loads(r["windows"])
        return {m.device_id: windows_for(m, dev, grp) for m in members}

    def set_override(self, device_id: str, bundle_ref: str, by: str) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO update_overrides (device_id, bundle_ref, created_by,"
                " created_at) VALUES (?, ?, ?, ?)",
                (device_id, bundle_ref, by, now_iso()),
            )

    def overrides(self, device_ids: list[str] | None = None) -> dict[str, str]:
        rows = self.conn.execute("SELECT device_id, bundle_ref FROM update_overrides")
        wanted = None if device_ids is None else set(device_ids)
        return {d: ref for d, ref in rows if wanted is None or d in wanted}
