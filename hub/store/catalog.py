"""Bundles, their immutable versions, and assignments of versions to devices, groups, tags."""

from __future__ import annotations

import json
from typing import Any

from bundles.versions import check_immutable, parse_version
from hub.desired import Assignment, Membership, resolve_all
from hub.errors import NotFound
from hub.store.base import StoreBase
from hub.timeutil import now_iso


def _newest_first(versions: list[str]) -> list[str]:
    return sorted(versions, key=lambda v: parse_version(v).precedence_key(), reverse=True)


class CatalogStore(StoreBase):
    # --- bundles -------------------------------------------------------------------------
    def put_bundle_version(
        self, name: str, version: str, spec: dict[str, Any], content_hash: str, description: str
    ) -> bool:
        """Store a version; False when it already exists with the same content (a no-op).

        Raises ``bundles.VersionConflict`` when it exists with different content.
        """
        with self.tx() as c:
            existing = self.scalar(
                "SELECT content_hash FROM bundle_versions WHERE bundle = ? AND version = ?",
                (name, version),
            )
            if not check_immutable(existing, content_hash, f"{name}@{version}"):
                return False
            now = now_iso()
            c.execute("INSERT OR IGNORE INTO bundles (name, created_at) VALUES (?, ?)", (name, now))
            c.execute(
                "INSERT INTO bundle_versions (bundle, version, spec, content_hash, description,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name, version, json.dumps(spec, sort_keys=True), content_hash, description, now),
            )
            return True

    def list_bundles(self) -> list[dict[str, Any]]:
        out = []
        for b in self.rows("SELECT name, created_at FROM bundles ORDER BY name"):
            versions = _newest_first(
                [
                    r[0]
                    for r in self.conn.execute(
                        "SELECT version FROM bundle_versions WHERE bundle = ?", (b["name"],)
                    )
                ]
            )
            b["versions"] = len(versions)
            b["latest"] = versions[0] if versions else None
            out.append(b)
        return out

    def bundle_versions(self, name: str) -> list[dict[str, Any]]:
        found = self.rows(
            "SELECT version, content_hash, description, created_at FROM bundle_versions"
            " WHERE bundle = ?",
            (name,),
        )
        if not found:
            raise NotFound(f"no bundle {name!r}", field="name")
        order = {v: i for i, v in enumerate(_newest_first([r["version"] for r in found]))}
        return sorted(found, key=lambda r: order[r["version"]])

    def get_bundle_version(self, name: str, version: str | None = None) -> dict[str, Any]:
        if version is None:
            version = self.bundle_versions(name)[0]["version"]
        row = self.row(
            "SELECT bundle, version, spec, content_hash, description, created_at"
            " FROM bundle_versions WHERE bundle = ? AND version = ?",
            (name, version),
        )
        if row is None:
            raise NotFound(f"no bundle version {name}@{version}", field="version")
        row["spec"] = json.loads(row["spec"])
        return row

    # --- assignments ---------------------------------------------------------------------
    def list_assignments(self) -> list[Assignment]:
        return [
            Assignment(**r)
            for r in self.rows(
                "SELECT id, target_kind, target, bundle, version, created_at FROM assignments"
                " ORDER BY id"
            )
        ]

    def assign(self, target_kind: str, target: str, bundle: str, version: str) -> Assignment:
        """Assign (or re-assign) a version to a target. The target must exist, except a tag,
        which may select devices tagged later."""
        with self.tx() as c:
            if not self.scalar(
                "SELECT 1 FROM bundle_versions WHERE bundle = ? AND version = ?", (bundle, version)
            ):
                raise NotFound(f"no bundle version {bundle}@{version}; push it first", "bundle")
            if target_kind == "device" and not self.scalar(
                "SELECT 1 FROM devices WHERE id = ?", (target,)
            ):
                raise NotFound(f"no device {target!r}", field="target")
            if target_kind == "group" and not self.scalar(
                "SELECT 1 FROM groups WHERE name = ?", (target,)
            ):
                raise NotFound(f"no group {target!r}", field="target")
            # Delete and insert (not update) so the newest assignment also has the greatest id,
            # the tie-breaker of the resolution rule.
            c.execute(
                "DELETE FROM assignments WHERE target_kind = ? AND target = ?",
                (target_kind, target),
            )
            cur = c.execute(
                "INSERT INTO assignments (target_kind, target, bundle, version, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (target_kind, target, bundle, version, now_iso()),
            )
            new_id = cur.lastrowid
        row = self.row("SELECT * FROM assignments WHERE id = ?", (new_id,))
        assert row is not None
        return Assignment(**row)

    def unassign(self, target_kind: str, target: str) -> Assignment:
        with self.tx() as c:
            row = self.row(
                "SELECT * FROM assignments WHERE target_kind = ? AND target = ?",
                (target_kind, target),
            )
            if row is None:
                raise NotFound(f"nothing is assigned to {target_kind}:{target}", field="target")
            c.execute("DELETE FROM assignments WHERE id = ?", (row["id"],))
        return Assignment(**row)

    # --- desired state -------------------------------------------------------------------
    def memberships(self, device_ids: list[str] | None = None) -> list[Membership]:
        where, params = "", []
        # Past a few hundred ids one full scan beats a huge IN list (and its variable limit).
        if device_ids is not None and len(device_ids) > 500:
            wanted = set(device_ids)
            return [m for m in self.memberships() if m.device_id in wanted]
        if device_ids is not None:
            where = f" WHERE id IN ({','.join('?' * len(device_ids))})"
            params = list(device_ids)
        devices = self.rows(f"SELECT id, decommissioned FROM devices{where}", params)
        member_where = where.replace("id IN", "device_id IN")
        tags: dict[str, set[str]] = {}
        for d, t in self.conn.execute(
            f"SELECT device_id, tag FROM device_tags{member_where}", params
        ):
            tags.setdefault(d, set()).add(t)
        groups: dict[str, set[str]] = {}
        for d, g in self.conn.execute(
            f"SELECT device_id, group_name FROM group_members{member_where}", params
        ):
            groups.setdefault(d, set()).add(g)
        return [
            Membership(
                r["id"],
                frozenset(groups.get(r["id"], ())),
                frozenset(tags.get(r["id"], ())),
                bool(r["decommissioned"]),
            )
            for r in devices
        ]

    def resolve_desired(self, device_ids: list[str] | None = None) -> dict[str, Assignment | None]:
        """Every (or the given) device's deciding assignment, by ``hub.desired.resolve``."""
        return resolve_all(self.memberships(device_ids), self.list_assignments())
