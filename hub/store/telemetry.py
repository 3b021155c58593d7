"""What devices tell the hub: events, metric rollups, latest reported state, sync position.

The write methods here are the seams the sync issue's ingest uses; the operator API reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from hub.store.base import StoreBase
from hub.timeutil import now_iso

METRIC_TABLES = {"1m": "metrics_1m", "1h": "metrics_1h"}


class TelemetryStore(StoreBase):
    def add_event(
        self,
        device_id: str | None,
        kind: str,
        message: str = "",
        data: dict[str, Any] | None = None,
        *,
        ts: str | None = None,
        seq: int | None = None,
        severity: str = "info",
    ) -> int:
        with self.tx() as c:
            cur = c.execute(
                "INSERT INTO events (device_id, ts, kind, message, data, seq, severity)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (device_id, ts or now_iso(), kind, message, json.dumps(data or {}), seq, severity),
            )
            return int(cur.lastrowid or 0)

    def add_events(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Insert ``(device_id, ts, kind, message, data JSON, seq, severity)`` rows in order:
        the ingest's batch form of ``add_event``."""
        with self.tx() as c:
            c.executemany(
                "INSERT INTO events (device_id, ts, kind, message, data, seq, severity)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def list_events(
        self, *, device: str | None = None, limit: int = 100, before: int | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; the cursor is the id to continue below."""
        where: list[str] = []
        params: list[Any] = []
        if device is not None:
            where.append("device_id = ?")
            params.append(device)
        if before is not None:
            where.append("id < ?")
            params.append(before)
        found = self.rows(
            "SELECT id, device_id, ts, kind, severity, message, data, seq FROM events"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY id DESC LIMIT ?",
            [*params, limit + 1],
        )
        items = found[:limit]
        for r in items:
            r["data"] = json.loads(r["data"])
        cursor = str(items[-1]["id"]) if len(found) > limit else None
        return items, cursor

    def put_metrics(
        self, resolution: str, device_id: str, rows: Iterable[tuple[str, int, float, float, float]]
    ) -> None:
        """Upsert rollups ``(name, ts, min, avg, max)``; replays overwrite with equal values."""
        table = METRIC_TABLES[resolution]
        with self.tx() as c:
            c.executemany(
                f"INSERT OR REPLACE INTO {table} (device_id, name, ts, min, avg, max)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(device_id, *r) for r in rows],
            )

    def put_metric_rows(
        self, resolution: str, rows: Iterable[tuple[str, str, int, float, float, float]]
    ) -> None:
        """``put_metrics`` for many devices: ``(device_id, name, ts, min, avg, max)`` rows,
        upserted in order (a later row for the same minute wins)."""
        table = METRIC_TABLES[resolution]
        with self.tx() as c:
            c.executemany(
                f"INSERT OR REPLACE INTO {table} (device_id, name, ts, min, avg, max)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def rollup_hours(self, hours: list[tuple[str, str, int]]) -> None:
        """Recompute ``metrics_1h`` for ``(device_id, name, hour start)`` from ``metrics_1m``:
        min of minimums, mean of the minute averages, max of maximums."""
        if not hours:
            return
        with self.tx() as c:
            c.executemany(
                "INSERT OR REPLACE INTO metrics_1h (device_id, name, ts, min, avg, max)"
                " SELECT device_id, name, ?, min(min), avg(avg), max(max) FROM metrics_1m"
                " WHERE device_id = ? AND name = ? AND ts >= ? AND ts < ?"
                " GROUP BY device_id, name",
                [(h, d, n, h, h + 3600) for d, n, h in hours],
            )

    def get_metrics(
        self,
        device_id: str,
        resolution: str = "1m",
        since: int | None = None,
        until: int | None = None,
        name: str | None = None,
        limit: int = 10_000,
    ) -> list[dict[str, Any]]:
        table = METRIC_TABLES[resolution]
        where = ["device_id = ?"]
        params: list[Any] = [device_id]
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        if until is not None:
            where.append("ts < ?")
            params.append(until)
        if name is not None:
            where.append("name = ?")
            params.append(name)
        return self.rows(
            f"SELECT name, ts, min, avg, max FROM {table} WHERE {' AND '.join(where)}"
            " ORDER BY name, ts LIMIT ?",
            [*params, limit],
        )

    def set_reported(self, device_id: str, doc: dict[str, Any], as_of: str | None = None) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO reported_state (device_id, doc, as_of) VALUES (?, ?, ?)",
                (device_id, json.dumps(doc, sort_keys=True), as_of or now_iso()),
            )

    def get_reported(self, device_id: str) -> dict[str, Any] | None:
        row = self.row("SELECT doc, as_of FROM reported_state WHERE device_id = ?", (device_id,))
        if row is None:
            return None
        return {"state": json.loads(row["doc"]), "as_of": row["as_of"]}

    def last_applied_seq(self, device_id: str) -> int:
        return int(
            self.scalar(
                "SELECT last_applied_seq FROM device_sync WHERE device_id = ?", (device_id,)
            )
            or 0
        )

    def set_last_applied_seq(self, device_id: str, seq: int) -> None:
        """Call inside the ingest batch's ``tx()`` so position and effects commit together."""
        with self.tx() as c:
            c.execute(
                "INSERT INTO device_sync (device_id, last_applied_seq) VALUES (?, ?)"
                " ON CONFLICT(device_id) DO UPDATE SET last_applied_seq = excluded.last_applied_seq",
                (device_id, seq),
            )
