"""Data budgets (metered links) per device or group, delivered in the desired document."""

from __future__ import annotations

import json
from typing import Any

from hub.desired import Membership
from hub.metered import budget_for, usage
from hub.store.base import StoreBase
from hub.timeutil import now_iso


class MeteredStore(StoreBase):
    def set_budget(self, kind: str, target: str, budget: int | None, by: str) -> bool:
        """Set (bytes per day) or clear (None: inherit) the budget of a device or group.
        Returns whether anything changed."""
        with self.tx() as c:
            old = self.scalar(
                "SELECT budget FROM metered_budgets WHERE target_kind = ? AND target = ?",
                (kind, target),
            )
            if old == budget:
                return False
            if budget is None:
                c.execute(
                    "DELETE FROM metered_budgets WHERE target_kind = ? AND target = ?",
                    (kind, target),
                )
            else:
                c.execute(
                    "INSERT OR REPLACE INTO metered_budgets"
                    " (target_kind, target, budget, set_by, set_at) VALUES (?, ?, ?, ?, ?)",
                    (kind, target, budget, by, now_iso()),
                )
            return True

    def list_budgets(self) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT target_kind, target, budget, set_by, set_at FROM metered_budgets"
            " ORDER BY target_kind, target"
        )

    def budgets_of(self, members: list[Membership]) -> dict[str, int | None]:
        """Each device's budget by ``hub.metered.budget_for`` (None: not metered by the hub)."""
        dev: dict[str, int] = {}
        grp: dict[str, int] = {}
        for r in self.rows("SELECT target_kind, target, budget FROM metered_budgets"):
            (dev if r["target_kind"] == "device" else grp)[r["target"]] = int(r["budget"])
        if not dev and not grp:
            return {}
        return {m.device_id: budget_for(m, dev, grp) for m in members}

    def usage_of(self, device_ids: list[str]) -> dict[str, dict[str, object] | None]:
        """Bytes used against the budget, from each device's latest full heartbeat."""
        if not device_ids:
            return {}
        marks = ",".join("?" * len(device_ids))
        out: dict[str, dict[str, object] | None] = {}
        for r in self.rows(
            f"SELECT device_id, doc FROM device_heartbeats WHERE device_id IN ({marks})",
            device_ids,
        ):
            try:
                doc = json.loads(r["doc"])
            except ValueError:
                continue
            out[r["device_id"]] = usage(doc if isinstance(doc, dict) else None)
        return out
