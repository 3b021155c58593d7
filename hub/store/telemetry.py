"""What devices tell the hub: events, metric rollups, latest reported state, sync position.

The write methods here are the seams the sync issue's ingest uses; the operator API reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from hub.store.base import StoreBase
from hub.timeutil import now_iso

METRIC_TABLES = {"1m": "metrics_1m", "1h": "metrics_1h"}

# A metric series (device, name) is the unit the metric prune walks; events walk (ts, id).
SeriesKey = tuple[str, str]
EventKey = tuple[str, int]
# One hour's share of a batch of minute rows: (device_id, name, hour start, min, max, sum of
# the minute averages, minute count), what ``fold_minutes`` adds to an hour row.
HourFold = tuple[str, str, int, float, float, float, int]
NO_FLOOR = 2**63  # above every event id: the keep-newest rule spares nothing


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

    def rollup_hours(self, hours: Iterable[tuple[str, str, int]]) -> None:
        """Recompute ``metrics_1h`` for ``(device_id, name, hour start)`` from ``metrics_1m``:
        min of minimums, mean of the minute averages, max of maximums (and the count and sum
        that ``fold_minutes`` continues from)."""
        with self.tx() as c:
            c.executemany(
                "INSERT OR REPLACE INTO metrics_1h (device_id, name, ts, min, avg, max, n, total)"
                " SELECT device_id, name, ?, min(min), avg(avg), max(max), count(*), sum(avg)"
                " FROM metrics_1m WHERE device_id = ? AND name = ? AND ts >= ? AND ts < ?"
                " GROUP BY device_id, name",
                [(h, d, n, h, h + 3600) for d, n, h in hours],
            )

    def fold_minutes(
        self,
        minutes: Sequence[tuple[str, str, int, float, float, float]],
        hours: Sequence[HourFold],
    ) -> bool:
        """Insert new ``metrics_1m`` rows ``(device_id, name, ts, min, avg, max)`` and fold
        them into their hours: ``hours`` is the same rows summed per (device, name, hour
        start) as ``(device_id, name, hour, min, max, total of avg, count)``
        (``hub.sync.rows.fold``). One statement each, no read of the hour's minutes.

        Returns False when the fold would not equal a recompute, and then leaves the hours
        to the caller's ``rollup_hours``: a minute the hub already holds (rewritten: it is
        replaced, later row winning, as ``put_metric_rows`` does) or an hour row from before
        migration 16 (no count to continue from)."""
        with self.tx() as c:
            if c.executemany(
                "INSERT INTO metrics_1m (device_id, name, ts, min, avg, max)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                minutes,
            ).rowcount != len(minutes):
                c.executemany(
                    "INSERT OR REPLACE INTO metrics_1m (device_id, name, ts, min, avg, max)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    minutes,
                )
                return False
            # An hour row without a count is left alone (the WHERE), which the row count
            # shows: every hour folded, or the caller recomputes them all.
            return c.executemany(
                "INSERT INTO metrics_1h (device_id, name, ts, min, max, total, n, avg)"
                " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?6 / ?7)"
                " ON CONFLICT DO UPDATE SET min = min(metrics_1h.min, excluded.min),"
                " max = max(metrics_1h.max, excluded.max),"
                " total = metrics_1h.total + excluded.total, n = metrics_1h.n + excluded.n,"
                " avg = (metrics_1h.total + excluded.total) / (metrics_1h.n + excluded.n)"
                " WHERE metrics_1h.n IS NOT NULL",
                hours,
            ).rowcount == len(hours)

    def forget_hours(self, hours: Iterable[tuple[str, str, int]]) -> None:
        """Mark hour rows as not foldable (their recompute failed): the next minute of such
        an hour recomputes it from its minutes, as before migration 16."""
        with self.tx() as c:
            c.executemany(
                "UPDATE metrics_1h SET n = NULL, total = NULL"
                " WHERE device_id = ? AND name = ? AND ts = ?",
                hours,
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
        """The position of the device's current store epoch (what "behind" is measured by)."""
        return int(
            self.scalar(
                "SELECT last_applied_seq FROM device_sync WHERE device_id = ?", (device_id,)
            )
            or 0
        )

    def set_last_applied_seq(self, device_id: str, seq: int) -> None:
        """Move the current epoch's position. Call inside the ingest batch's ``tx()`` so
        position and effects commit together."""
        epoch = self.sync_epoch(device_id)[0]
        self.set_sync_position(device_id, epoch, seq)

    def sync_epoch(self, device_id: str) -> tuple[str, int]:
        """``(current epoch, its position)``; ``('', 0)`` for a device that never reported."""
        row = self.conn.execute(
            "SELECT epoch, last_applied_seq FROM device_sync WHERE device_id = ?", (device_id,)
        ).fetchone()
        return ("", 0) if row is None else (str(row[0]), int(row[1]))

    def epoch_position(self, device_id: str, epoch: str) -> int | None:
        """The position of one of the device's store epochs; None for one never seen."""
        v = self.scalar(
            "SELECT last_applied_seq FROM device_sync_epochs WHERE device_id = ? AND epoch = ?",
            (device_id, epoch),
        )
        if v is None:
            cur, pos = self.sync_epoch(device_id)
            # A device_sync row without its epoch row (enrolled, nothing applied yet).
            return pos if cur == epoch and epoch == "" else None
        return int(v)

    def set_sync_position(self, device_id: str, epoch: str, seq: int) -> None:
        """Record ``seq`` as applied for this epoch (and as the device's position when it is
        the current epoch)."""
        with self.tx() as c:
            c.execute(
                "INSERT INTO device_sync_epochs (device_id, epoch, last_applied_seq, first_seen)"
                " VALUES (?, ?, ?, ?) ON CONFLICT(device_id, epoch) DO UPDATE SET"
                " last_applied_seq = excluded.last_applied_seq",
                (device_id, epoch, seq, now_iso()),
            )
            c.execute(
                "INSERT INTO device_sync (device_id, last_applied_seq, epoch) VALUES (?, ?, ?)"
                " ON CONFLICT(device_id) DO UPDATE SET last_applied_seq = excluded.last_applied_seq"
                " WHERE device_sync.epoch = excluded.epoch",
                (device_id, seq, epoch),
            )

    def begin_epoch(self, device_id: str, epoch: str, keep: int = 16) -> None:
        """Make ``epoch`` the device's current one (its position as recorded, 0 when new),
        keeping the newest ``keep`` epochs' positions: a report of an older store still in
        the stream is applied against its own numbering."""
        with self.tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO device_sync_epochs (device_id, epoch, last_applied_seq,"
                " first_seen) VALUES (?, ?, 0, ?)",
                (device_id, epoch, now_iso()),
            )
            pos = self.epoch_position(device_id, epoch) or 0
            c.execute(
                "INSERT INTO device_sync (device_id, last_applied_seq, epoch) VALUES (?, ?, ?)"
                " ON CONFLICT(device_id) DO UPDATE SET last_applied_seq = excluded.last_applied_seq,"
                " epoch = excluded.epoch",
                (device_id, pos, epoch),
            )
            c.execute(
                "DELETE FROM device_sync_epochs WHERE device_id = ? AND epoch <> ? AND epoch NOT IN"
                " (SELECT epoch FROM device_sync_epochs WHERE device_id = ?"
                "  ORDER BY first_seen DESC, epoch LIMIT ?)",
                (device_id, epoch, device_id, keep),
            )

    # --- retention (hub/retention.py drives these; each call is one short transaction) ---

    def prune_metrics_chunk(
        self,
        resolution: str,
        cutoff: int,
        after: SeriesKey | None,
        max_rows: int,
        max_series: int,
    ) -> tuple[int, SeriesKey | None, bool]:
        """Delete rollups with ``ts < cutoff`` from the series after ``after`` on, at most
        ``max_rows`` rows and ``max_series`` series visited; return (deleted, where to go on,
        finished).

        No index on ts: the table is keyed (device, name, ts), so each series is one seek to
        its oldest row, and its expired rows are one contiguous key range.
        """
        table = METRIC_TABLES[resolution]
        deleted = 0
        cursor = after
        with self.tx() as c:
            for _ in range(max_series):
                if cursor is None:
                    first = c.execute(
                        f"SELECT device_id, name, ts FROM {table}"
                        " ORDER BY device_id, name, ts LIMIT 1"
                    ).fetchone()
                else:
                    # Two seeks, not one `(device_id, name) > (?, ?)`: SQLite 3.40 answers that
                    # row value by stepping through the whole previous series (~40x slower).
                    first = (
                        c.execute(
                            f"SELECT device_id, name, ts FROM {table} WHERE device_id = ? AND name > ?"
                            " ORDER BY device_id, name, ts LIMIT 1",
                            cursor,
                        ).fetchone()
                        or c.execute(
                            f"SELECT device_id, name, ts FROM {table} WHERE device_id > ?"
                            " ORDER BY device_id, name, ts LIMIT 1",
                            (cursor[0],),
                        ).fetchone()
                    )
                if first is None:
                    return deleted, None, True
                device_id, name, oldest = first
                if oldest < cutoff:
                    budget = max_rows - deleted
                    # The (budget+1)-th oldest expired row bounds a delete of exactly budget
                    # rows (ts is unique within a series); none: the whole expired range fits.
                    bound = c.execute(
                        f"SELECT ts FROM {table} WHERE device_id = ? AND name = ? AND ts < ?"
                        " ORDER BY ts LIMIT 1 OFFSET ?",
                        (device_id, name, cutoff, budget),
                    ).fetchone()
                    deleted += c.execute(
                        f"DELETE FROM {table} WHERE device_id = ? AND name = ? AND ts < ?",
                        (device_id, name, cutoff if bound is None else bound[0]),
                    ).rowcount
                    if bound is not None:
                        return deleted, cursor, False  # this series again, next chunk
                cursor = (device_id, name)
                if deleted >= max_rows:
                    break
        return deleted, cursor, False

    def events_keep_floor(self, device_id: str | None, keep: int) -> int:
        """The smallest event id the keep-newest rule protects for this device (None: the
        hub's own events): only ids below it may go. Decommissioned and unknown devices get
        no protection: their events age out like any."""
        if keep <= 0:
            return NO_FLOOR
        if device_id is not None:
            active = self.scalar(
                "SELECT 1 FROM devices WHERE id = ? AND decommissioned = 0", (device_id,)
            )
            if active is None:
                return NO_FLOOR
        nth = self.scalar(
            "SELECT id FROM events WHERE device_id IS ? ORDER BY id DESC LIMIT 1 OFFSET ?",
            (device_id, keep - 1),
        )
        # Fewer than keep events: every one of them is protected.
        return 0 if nth is None else int(nth)

    def prune_events_chunk(
        self,
        cutoff: str,
        keep: int,
        after: EventKey | None,
        max_rows: int,
        floors: dict[str | None, int],
    ) -> tuple[int, EventKey | None, bool]:
        """Delete events with ``ts < cutoff`` in (ts, id) order after ``after``, looking at
        most at ``max_rows`` candidates, sparing each device's newest ``keep``; return
        (deleted, where to go on, finished).

        ``floors`` caches ``events_keep_floor`` per device for one pass: events added later
        only raise a device's floor, so a cached one spares at least as much as a fresh one.
        """
        with self.tx() as c:
            if after is None:
                found = c.execute(
                    "SELECT ts, id, device_id FROM events WHERE ts < ? ORDER BY ts, id LIMIT ?",
                    (cutoff, max_rows),
                ).fetchall()
            else:
                found = c.execute(
                    "SELECT ts, id, device_id FROM events WHERE ts < ? AND (ts, id) > (?, ?)"
                    " ORDER BY ts, id LIMIT ?",
                    (cutoff, *after, max_rows),
                ).fetchall()
            doomed: list[tuple[int]] = []
            for _, event_id, device_id in found:
                if device_id not in floors:
                    floors[device_id] = self.events_keep_floor(device_id, keep)
                if event_id < floors[device_id]:
                    doomed.append((event_id,))
            c.executemany("DELETE FROM events WHERE id = ?", doomed)
        if len(found) < max_rows:
            return len(doomed), None, True
        last = found[-1]
        return len(doomed), (last[0], last[1]), False
