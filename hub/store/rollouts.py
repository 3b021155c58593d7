"""The rollout tables: ``rollouts``, ``rollout_targets``, ``rollout_phases`` and
``rollout_deployments``. Rows go in and out as plain dicts and values; what the states mean
(which statuses are active, which device states final, how phases are planned) is the
rollout rules' business (``hub.rollouts``), so callers pass those states in — this module
must not import ``hub.rollouts``, which imports the store.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

from hub.errors import NotFound
from hub.store.base import StoreBase

ROLLOUT_COLUMNS = (
    "id, bundle, version, target_kind, target, status, reason, canary_percent, max_failures,"
    " failures_accepted, created_at, updated_at, phases, bake_s, max_failures_basis"
)
TARGET_COLUMNS = (
    "device_id, state, reason, phase, updated_at, written_at, assignment_id, prev_bundle,"
    " prev_version, base_generation, generation"
)


def chunks(ids: Sequence[str], size: int = 500) -> list[Sequence[str]]:
    """Keep IN lists far below SQLite's bound-variable limit, whatever the fleet size."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _marks(values: Collection[Any]) -> str:
    return ",".join("?" * len(values))


class RolloutStore(StoreBase):
    # --- rollouts ------------------------------------------------------------------------
    def rollout_row(self, rollout_id: str) -> dict[str, Any]:
        row = self.row(f"SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?", (rollout_id,))
        if row is None:
            raise NotFound(f"no rollout {rollout_id!r}", field="id")
        return row

    def rollout_ids(self, statuses: Sequence[str]) -> list[str]:
        """Rollouts in any of ``statuses``, oldest first."""
        return [
            r[0]
            for r in self.conn.execute(
                f"SELECT id FROM rollouts WHERE status IN ({_marks(statuses)}) ORDER BY rowid",
                list(statuses),
            )
        ]

    def rollout_rows(
        self, status: str | None, limit: int, before: int | None
    ) -> list[dict[str, Any]]:
        """Newest first, up to ``limit``; ``seq`` is each row's rowid (the page cursor)."""
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if before is not None:
            where.append("rowid < ?")
            params.append(before)
        return self.rows(
            f"SELECT rowid AS seq, {ROLLOUT_COLUMNS} FROM rollouts"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY rowid DESC LIMIT ?",
            [*params, limit],
        )

    def insert_rollout(
        self,
        row: dict[str, Any],
        sizes: Sequence[int],
        targets: Iterable[tuple[str, int, str, str]],
    ) -> None:
        """A new rollout (``row``: its columns), its phases by size (numbered from 1) and its
        targets as (device, phase, state, reason)."""
        with self.tx() as c:
            c.execute(
                "INSERT INTO rollouts (id, bundle, version, target_kind, target, status,"
                " canary_percent, max_failures, max_failures_basis, phases, bake_s, created_at,"
                " updated_at) VALUES (:id, :bundle, :version, :target_kind, :target, :status,"
                " :canary_percent, :max_failures, :max_failures_basis, :phases, :bake_s,"
                " :created_at, :updated_at)",
                row,
            )
            c.executemany(
                "INSERT INTO rollout_phases (rollout_id, number, size) VALUES (?, ?, ?)",
                [(row["id"], n, size) for n, size in enumerate(sizes, start=1)],
            )
            c.executemany(
                "INSERT INTO rollout_targets (rollout_id, device_id, state, reason, phase,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(row["id"], d, s, r, n, row["created_at"]) for d, n, s, r in targets],
            )

    def set_rollout_status(
        self, rollout_id: str, status: str, reason: str | None, accepted: int, at: str
    ) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE rollouts SET status = ?, reason = ?, failures_accepted = ?,"
                " updated_at = ? WHERE id = ?",
                (status, reason, accepted, at, rollout_id),
            )

    # --- phases --------------------------------------------------------------------------
    def rollout_phase_rows(self, rollout_id: str) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT number, size, started_at, completed_at, failures_accepted FROM"
            " rollout_phases WHERE rollout_id = ? ORDER BY number",
            (rollout_id,),
        )

    def update_rollout_phase(
        self,
        rollout_id: str,
        number: int,
        started_at: str | None,
        completed_at: str | None,
        failures_accepted: int,
    ) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE rollout_phases SET started_at = ?, completed_at = ?,"
                " failures_accepted = ? WHERE rollout_id = ? AND number = ?",
                (started_at, completed_at, failures_accepted, rollout_id, number),
            )

    # --- targets -------------------------------------------------------------------------
    def rollout_target_rows(
        self, rollout_id: str, *, limit: int | None = None, after: str | None = None
    ) -> list[dict[str, Any]]:
        """The rollout's devices by id (a page of them with ``limit``/``after``), with the
        device's status, last_seen and decommissioned flag."""
        sql = (
            f"SELECT {TARGET_COLUMNS}, d.status AS device_status, d.last_seen, d.decommissioned"
            " FROM rollout_targets t JOIN devices d ON d.id = t.device_id"
            " WHERE t.rollout_id = ?"
        )
        params: list[Any] = [rollout_id]
        if after is not None:
            sql += " AND t.device_id > ?"
            params.append(after)
        sql += " ORDER BY t.device_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self.rows(sql, params)

    def rollout_state_counts(self, rollout_id: str) -> list[tuple[int, str, int, int]]:
        """(phase, state, devices, of them written) per phase and state."""
        return [
            (int(p), s, int(n), int(w))
            for p, s, n, w in self.conn.execute(
                "SELECT phase, state, count(*), count(written_at) FROM rollout_targets"
                " WHERE rollout_id = ? GROUP BY phase, state",
                (rollout_id,),
            )
        ]

    def rollout_deferred_counts(self, rollout_id: str, state: str, prefix: str) -> dict[int, int]:
        """Devices per phase in ``state`` whose reason starts with ``prefix`` (the rollout
        machine's deferred devices: their agent holds the revision for a lock or window)."""
        return {
            int(p): int(n)
            for p, n in self.conn.execute(
                "SELECT phase, count(*) FROM rollout_targets WHERE rollout_id = ? AND state = ?"
                " AND substr(reason, 1, ?) = ? GROUP BY phase",
                (rollout_id, state, len(prefix), prefix),
            )
        }

    def rollout_unheard_count(self, rollout_id: str, phase: int, state: str, since: str) -> int:
        """Targets of ``phase`` in ``state`` whose device was not heard from since ``since``
        (its ``last_seen`` older, or never): a baked phase's devices without evidence yet."""
        n = self.scalar(
            "SELECT count(*) FROM rollout_targets t JOIN devices d ON d.id = t.device_id"
            " WHERE t.rollout_id = ? AND t.phase = ? AND t.state = ?"
            " AND (d.last_seen IS NULL OR d.last_seen < ?)",
            (rollout_id, phase, state, since),
        )
        return int(n or 0)

    def rollout_offline_count(self, rollout_id: str, final_states: Sequence[str]) -> int:
        """Targets not in ``final_states`` whose device is not online."""
        n = self.scalar(
            "SELECT count(*) FROM rollout_targets t JOIN devices d ON d.id = t.device_id"
            f" WHERE t.rollout_id = ? AND t.state NOT IN ({_marks(final_states)})"
            " AND d.status != 'online'",
            [rollout_id, *final_states],
        )
        return int(n or 0)

    def rollout_selects(self, kind: str, target: str) -> list[str]:
        """The devices a rollout target selects now (decommissioned ones never), by id."""
        if kind == "device":
            sql = "SELECT id FROM devices WHERE id = ? AND decommissioned = 0"
        elif kind == "group":
            if not self.scalar("SELECT 1 FROM groups WHERE name = ?", (target,)):
                raise NotFound(f"no group {target!r}", field="target")
            sql = (
                "SELECT d.id FROM devices d JOIN group_members g ON g.device_id = d.id"
                " WHERE g.group_name = ? AND d.decommissioned = 0"
            )
        else:
            sql = (
                "SELECT d.id FROM devices d JOIN device_tags t ON t.device_id = d.id"
                " WHERE t.tag = ? AND d.decommissioned = 0"
            )
        return sorted(r[0] for r in self.conn.execute(sql, (target,)))

    def busy_rollout_targets(
        self, devices: Sequence[str], statuses: Sequence[str], limit: int = 5
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` (device_id, id) pairs per chunk: devices of ``devices`` already
        targeted by a rollout in one of ``statuses``."""
        out: list[dict[str, Any]] = []
        for part in chunks(devices):
            out += self.rows(
                "SELECT t.device_id, r.id FROM rollout_targets t JOIN rollouts r"
                f" ON r.id = t.rollout_id WHERE r.status IN ({_marks(statuses)})"
                f" AND t.device_id IN ({_marks(part)}) ORDER BY t.device_id LIMIT ?",
                [*statuses, *part, limit],
            )
        return out

    def online_among(self, devices: Sequence[str]) -> set[str]:
        out: set[str] = set()
        for part in chunks(devices):
            out.update(
                r[0]
                for r in self.conn.execute(
                    f"SELECT id FROM devices WHERE status = 'online' AND id IN ({_marks(part)})",
                    part,
                )
            )
        return out

    def unwritten_phase_devices(self, rollout_id: str, phase: int) -> list[str]:
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT device_id FROM rollout_targets WHERE rollout_id = ? AND phase = ?"
                " AND written_at IS NULL ORDER BY device_id",
                (rollout_id, phase),
            )
        ]

    def mark_target_written(self, rollout_id: str, device_id: str, values: dict[str, Any]) -> None:
        """``values``: written_at, assignment_id, prev_bundle, prev_version,
        base_generation, state, reason, updated_at."""
        with self.tx() as c:
            c.execute(
                "UPDATE rollout_targets SET written_at = :written_at,"
                " assignment_id = :assignment_id, prev_bundle = :prev_bundle,"
                " prev_version = :prev_version, base_generation = :base_generation,"
                " state = :state, reason = :reason, updated_at = :updated_at"
                " WHERE rollout_id = :rollout_id AND device_id = :device_id",
                {**values, "rollout_id": rollout_id, "device_id": device_id},
            )

    def written_targets(self, rollout_id: str) -> list[dict[str, Any]]:
        """device_id, assignment_id, prev_bundle, prev_version of each written target."""
        return self.rows(
            "SELECT device_id, assignment_id, prev_bundle, prev_version FROM rollout_targets"
            " WHERE rollout_id = ? AND written_at IS NOT NULL ORDER BY device_id",
            (rollout_id,),
        )

    def raise_target_generation(self, rollout_id: str, device_id: str, generation: int) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE rollout_targets SET generation = ? WHERE rollout_id = ?"
                " AND device_id = ? AND (generation IS NULL OR generation < ?)",
                (generation, rollout_id, device_id, generation),
            )

    def target_state(self, rollout_id: str, device_id: str) -> str | None:
        row = self.row(
            "SELECT state FROM rollout_targets WHERE rollout_id = ? AND device_id = ?",
            (rollout_id, device_id),
        )
        return None if row is None else str(row["state"])

    def set_target_state(
        self, rollout_id: str, device_id: str, state: str, reason: str | None, at: str
    ) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE rollout_targets SET state = ?, reason = ?, updated_at = ?"
                " WHERE rollout_id = ? AND device_id = ?",
                (state, reason, at, rollout_id, device_id),
            )

    def rollout_of_device(
        self, device_id: str, statuses: Sequence[str], final_states: Sequence[str]
    ) -> str | None:
        """The rollout in one of ``statuses`` that has written ``device_id`` and not seen it
        reach one of ``final_states``."""
        row = self.row(
            "SELECT t.rollout_id FROM rollout_targets t JOIN rollouts r ON r.id = t.rollout_id"
            f" WHERE t.device_id = ? AND r.status IN ({_marks(statuses)})"
            f" AND t.written_at IS NOT NULL AND t.state NOT IN ({_marks(final_states)})",
            [device_id, *statuses, *final_states],
        )
        return None if row is None else str(row["rollout_id"])

    # --- what devices reported and were sent ---------------------------------------------
    def device_assignment(self, device_id: str) -> dict[str, Any] | None:
        """The device-level assignment of ``device_id`` (id, bundle, version), if any."""
        return self.row(
            "SELECT id, bundle, version FROM assignments"
            " WHERE target_kind = 'device' AND target = ?",
            (device_id,),
        )

    def published_generations(self, devices: Sequence[str]) -> dict[str, int]:
        """The generation last written to each device's KV key, when the sync side records
        it."""
        if not self.scalar(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'desired_published'"
        ):
            return {}
        return {
            r[0]: int(r[1])
            for part in chunks(devices)
            for r in self.conn.execute(
                "SELECT device_id, generation FROM desired_published WHERE device_id IN"
                f" ({_marks(part)})",
                part,
            )
        }

    def reported_texts(self, device_ids: Sequence[str]) -> dict[str, str]:
        """Each device's reported-state document as stored (text: a caller that has seen the
        same text before need not parse it again)."""
        out: dict[str, str] = {}
        for part in chunks(device_ids):
            for d, doc in self.conn.execute(
                f"SELECT device_id, doc FROM reported_state WHERE device_id IN ({_marks(part)})",
                part,
            ):
                out[d] = doc
        return out

    # --- deployment verdicts -------------------------------------------------------------
    def upsert_deployments(
        self,
        rollout_id: str,
        device_id: str,
        rows: Sequence[tuple[int, str | None, str, str | None]],
        at: str,
        final: Sequence[str],
    ) -> None:
        """Keep (generation, bundle_ref, status, reason) rows; a row already in one of the
        ``final`` statuses is never overwritten."""
        self.conn.executemany(
            "INSERT INTO rollout_deployments (rollout_id, device_id, generation, bundle_ref,"
            " status, reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (rollout_id, device_id, generation) DO UPDATE SET"
            " bundle_ref = excluded.bundle_ref, status = excluded.status,"
            " reason = excluded.reason, updated_at = excluded.updated_at"
            f" WHERE rollout_deployments.status NOT IN ({_marks(final)})",
            [(rollout_id, device_id, *r, at, *final) for r in rows],
        )

    def deployment_rows(
        self, rollout_id: str, device_ids: Sequence[str]
    ) -> list[tuple[str, int, str | None, str, str | None]]:
        """(device, generation, bundle_ref, status, reason) kept for ``device_ids``."""
        out: list[tuple[str, int, str | None, str, str | None]] = []
        for part in chunks(device_ids):
            for d, gen, ref, status, reason in self.conn.execute(
                "SELECT device_id, generation, bundle_ref, status, reason FROM"
                f" rollout_deployments WHERE rollout_id = ? AND device_id IN ({_marks(part)})",
                [rollout_id, *part],
            ):
                out.append((d, int(gen), ref, status, reason))
        return out

    def delete_deployments(self, rollout_id: str, device_ids: Sequence[str] | None) -> None:
        """Of ``device_ids``, or (None) of the whole rollout."""
        if device_ids is None:
            self.conn.execute("DELETE FROM rollout_deployments WHERE rollout_id = ?", (rollout_id,))
            return
        for part in chunks(device_ids):
            self.conn.execute(
                "DELETE FROM rollout_deployments WHERE rollout_id = ?"
                f" AND device_id IN ({_marks(part)})",
                [rollout_id, *part],
            )
