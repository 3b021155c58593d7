"""Tenants, devices, their tags and groups."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hub.errors import Conflict, NotFound
from hub.store.base import StoreBase
from hub.timeutil import now_iso

DEVICE_COLUMNS = (
    "id, tenant, hostname, arch, os, engine, agent_version, status, enrolled_at, last_seen, "
    "decommissioned"
)


def _device(row: dict[str, Any]) -> dict[str, Any]:
    row["decommissioned"] = bool(row["decommissioned"])
    for key in ("tags", "groups"):
        if key in row:
            row[key] = sorted(row[key].split("\x1f")) if row[key] else []
    return row


def _doc_predicate(accept: Callable[[Any], bool]) -> Callable[[str], int]:
    def match(doc: str) -> int:
        try:
            return int(bool(accept(json.loads(doc))))
        except ValueError:
            return 0  # a damaged document matches nothing rather than failing the page

    return match


class FleetStore(StoreBase):
    # --- devices (written by enrollment and ingest; the operator API reads and tags) --------
    def upsert_device(
        self,
        device_id: str,
        tenant: str,
        *,
        hostname: str = "",
        arch: str = "",
        os: str = "",
        engine: str = "",
        agent_version: str = "",
        tags: tuple[str, ...] | list[str] = (),
        status: str = "unknown",
    ) -> dict[str, Any]:
        """Create a device or refresh its facts (enrollment). Re-enrolling a decommissioned
        device brings it back."""
        now = now_iso()
        with self.tx() as c:
            c.execute("INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?, ?)", (tenant, now))
            c.execute(
                "INSERT INTO devices (id, tenant, hostname, arch, os, engine, agent_version,"
                " status, enrolled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET tenant=excluded.tenant,"
                " hostname=excluded.hostname, arch=excluded.arch, os=excluded.os,"
                " engine=excluded.engine, agent_version=excluded.agent_version,"
                " decommissioned=0",
                (device_id, tenant, hostname, arch, os, engine, agent_version, status, now),
            )
            c.executemany(
                "INSERT OR IGNORE INTO device_tags (device_id, tag) VALUES (?, ?)",
                [(device_id, t) for t in tags],
            )
            c.execute(
                "INSERT OR IGNORE INTO device_sync (device_id, last_applied_seq) VALUES (?, 0)",
                (device_id,),
            )
        return self.get_device(device_id)

    def set_device_status(self, device_id: str, status: str, last_seen: str | None = None) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE devices SET status = ?, last_seen = COALESCE(?, last_seen) WHERE id = ?",
                (status, last_seen, device_id),
            )

    def device_exists(self, device_id: str) -> bool:
        return self.scalar("SELECT 1 FROM devices WHERE id = ?", (device_id,)) is not None

    def _require_device(self, device_id: str, field: str = "id") -> None:
        if not self.device_exists(device_id):
            raise NotFound(f"no device {device_id!r}", field=field)

    def get_device(self, device_id: str) -> dict[str, Any]:
        row = self.row(
            f"SELECT {DEVICE_COLUMNS},"
            " (SELECT group_concat(tag, char(31)) FROM device_tags t WHERE t.device_id = d.id)"
            " AS tags,"
            " (SELECT group_concat(group_name, char(31)) FROM group_members g"
            "  WHERE g.device_id = d.id) AS groups"
            " FROM devices d WHERE id = ?",
            (device_id,),
        )
        if row is None:
            raise NotFound(f"no device {device_id!r}", field="id")
        return _device(row)

    def list_devices(
        self,
        *,
        tag: str | None = None,
        group: str | None = None,
        status: str | None = None,
        text: str | None = None,
        ids: list[str] | None = None,
        include_decommissioned: bool = False,
        limit: int = 100,
        after: str | None = None,
        running: Callable[[Any], bool] | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of devices ordered by id; returns (items, cursor for the next page).

        ``running`` keeps devices whose reported state document (parsed) it accepts; it runs
        inside the query so paging stays exact. ``ids`` keeps only those devices (the caller
        bounds the list: one placeholder each).
        """
        where: list[str] = []
        params: list[Any] = []
        if running is not None:
            self.conn.create_function(
                "sb_reported_match", 1, _doc_predicate(running), deterministic=True
            )
            where.append(
                "EXISTS (SELECT 1 FROM reported_state r WHERE r.device_id = d.id"
                " AND sb_reported_match(r.doc))"
            )
        if not include_decommissioned:
            where.append("d.decommissioned = 0")
        if tag is not None:
            where.append(
                "EXISTS (SELECT 1 FROM device_tags t WHERE t.device_id = d.id AND tag = ?)"
            )
            params.append(tag)
        if group is not None:
            where.append(
                "EXISTS (SELECT 1 FROM group_members g WHERE g.device_id = d.id"
                " AND g.group_name = ?)"
            )
            params.append(group)
        if status is not None:
            where.append("d.status = ?")
            params.append(status)
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(d.id LIKE ? ESCAPE '\\' OR d.hostname LIKE ? ESCAPE '\\')")
            params += [pattern, pattern]
        if ids is not None:
            where.append(f"d.id IN ({','.join('?' * len(ids))})" if ids else "0")
            params += ids
        if after is not None:
            where.append("d.id > ?")
            params.append(after)
        sql = (
            f"SELECT {DEVICE_COLUMNS} FROM devices d"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY d.id LIMIT ?"
        )
        # One extra row tells whether a next page exists without a COUNT.
        found = self.rows(sql, [*params, limit + 1])
        items = found[:limit]
        cursor = items[-1]["id"] if len(found) > limit else None
        # Tags and groups of the page in two queries, not two subqueries per row.
        tags: dict[str, list[str]] = {d["id"]: [] for d in items}
        groups: dict[str, list[str]] = {d["id"]: [] for d in items}
        if items:
            marks = ",".join("?" * len(items))
            ids = [d["id"] for d in items]
            for dev, tag in self.conn.execute(
                f"SELECT device_id, tag FROM device_tags WHERE device_id IN ({marks}) ORDER BY tag",
                ids,
            ):
                tags[dev].append(tag)
            for dev, group in self.conn.execute(
                f"SELECT device_id, group_name FROM group_members WHERE device_id IN ({marks})"
                " ORDER BY group_name",
                ids,
            ):
                groups[dev].append(group)
        for d in items:
            d["decommissioned"] = bool(d["decommissioned"])
            d["tags"] = tags[d["id"]]
            d["groups"] = groups[d["id"]]
        return items, cursor

    def tag_device(self, device_id: str, tag: str) -> bool:
        """Add a tag; False when the device already had it."""
        with self.tx() as c:
            self._require_device(device_id)
            cur = c.execute(
                "INSERT OR IGNORE INTO device_tags (device_id, tag) VALUES (?, ?)", (device_id, tag)
            )
            return cur.rowcount > 0

    def untag_device(self, device_id: str, tag: str) -> bool:
        with self.tx() as c:
            self._require_device(device_id)
            cur = c.execute(
                "DELETE FROM device_tags WHERE device_id = ? AND tag = ?", (device_id, tag)
            )
            return cur.rowcount > 0

    def decommission_device(self, device_id: str) -> bool:
        with self.tx() as c:
            self._require_device(device_id)
            cur = c.execute(
                "UPDATE devices SET decommissioned = 1, status = 'decommissioned'"
                " WHERE id = ? AND decommissioned = 0",
                (device_id,),
            )
            return cur.rowcount > 0

    # --- groups --------------------------------------------------------------------------
    def create_group(self, name: str, description: str = "") -> dict[str, Any]:
        with self.tx() as c:
            if self.scalar("SELECT 1 FROM groups WHERE name = ?", (name,)):
                raise Conflict(f"group {name!r} already exists", field="name")
            c.execute(
                "INSERT INTO groups (name, description, created_at) VALUES (?, ?, ?)",
                (name, description, now_iso()),
            )
        return self.get_group(name)

    def get_group(self, name: str) -> dict[str, Any]:
        row = self.row(
            "SELECT name, description, created_at,"
            " (SELECT count(*) FROM group_members m WHERE m.group_name = g.name) AS members"
            " FROM groups g WHERE name = ?",
            (name,),
        )
        if row is None:
            raise NotFound(f"no group {name!r}", field="name")
        return row

    def delete_group(self, name: str) -> list[str]:
        """Delete a group; returns the devices that were in it."""
        with self.tx() as c:
            self.get_group(name)
            if self.scalar(
                "SELECT 1 FROM assignments WHERE target_kind = 'group' AND target = ?", (name,)
            ):
                raise Conflict(
                    f"group {name!r} has an assignment; unassign group:{name} first", field="name"
                )
            members = [
                r[0]
                for r in c.execute(
                    "SELECT device_id FROM group_members WHERE group_name = ?", (name,)
                )
            ]
            c.execute("DELETE FROM groups WHERE name = ?", (name,))
        return members

    def add_to_group(self, name: str, device_id: str) -> bool:
        with self.tx() as c:
            self.get_group(name)
            self._require_device(device_id, field="device")
            cur = c.execute(
                "INSERT OR IGNORE INTO group_members (group_name, device_id) VALUES (?, ?)",
                (name, device_id),
            )
            return cur.rowcount > 0

    def remove_from_group(self, name: str, device_id: str) -> bool:
        with self.tx() as c:
            self.get_group(name)
            self._require_device(device_id, field="device")
            cur = c.execute(
                "DELETE FROM group_members WHERE group_name = ? AND device_id = ?",
                (name, device_id),
            )
            return cur.rowcount > 0

    def list_groups(self) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT name, description, created_at,"
            " (SELECT count(*) FROM group_members m WHERE m.group_name = g.name) AS members"
            " FROM groups g ORDER BY name"
        )
