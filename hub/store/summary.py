"""The rows behind the ``devices.list`` summary view, a few set-based queries per page.

Each method takes the page's device ids (any number: IN lists are chunked) and returns plain
rows; ``hub.api.summary`` shapes them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from hub.store.base import StoreBase

log = logging.getLogger(__name__)

CHUNK = 500  # far below SQLite's bound-variable limit
ACTIVE_ROLLOUTS = ("running", "paused")


def _chunks(ids: Sequence[str]) -> Iterator[tuple[Sequence[str], str]]:
    for i in range(0, len(ids), CHUNK):
        part = ids[i : i + CHUNK]
        yield part, ",".join("?" * len(part))


class SummaryStore(StoreBase):
    def reported_states(self, device_ids: Sequence[str]) -> dict[str, Any]:
        """The stored reported-state document of each device that has one."""
        out: dict[str, Any] = {}
        for part, marks in _chunks(device_ids):
            for d, doc in self.conn.execute(
                f"SELECT device_id, doc FROM reported_state WHERE device_id IN ({marks})", part
            ):
                try:
                    out[d] = json.loads(doc)
                except ValueError:
                    log.warning("reported state is not JSON", extra={"device": d})
        return out

    def active_rollout_targets(self, device_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each device's row in its newest running or paused rollout: ``{id, state, reason}``."""
        out: dict[str, dict[str, Any]] = {}
        for part, marks in _chunks(device_ids):
            # Oldest first so the newest rollout's row is the one left in the dict.
            for d, rid, state, reason in self.conn.execute(
                "SELECT t.device_id, r.id, t.state, t.reason FROM rollout_targets t"
                " JOIN rollouts r ON r.id = t.rollout_id"
                f" WHERE r.status IN (?, ?) AND t.device_id IN ({marks})"
                " ORDER BY r.created_at, r.id",
                [*ACTIVE_ROLLOUTS, *part],
            ):
                out[d] = {"id": rid, "state": state, "reason": reason}
        return out

    def metric_window(
        self, device_ids: Sequence[str], names: Sequence[str], start: int, end: int, step: int
    ) -> tuple[list[tuple[str, str, int, float, int]], list[tuple[str, str, float]]]:
        """Minute averages of ``names`` in ``[start, end)``, summed per ``step``-second
        bucket — ``(device, name, bucket index, sum of avg, minutes)`` — and the newest minute
        average of each ``(device, name)`` there. Bucketing in SQL returns 5x fewer rows."""
        buckets: list[tuple[str, str, int, float, int]] = []
        last: list[tuple[str, str, float]] = []
        name_marks = ",".join("?" * len(names))
        for part, marks in _chunks(device_ids):
            where = f"device_id IN ({marks}) AND name IN ({name_marks}) AND ts >= ? AND ts < ?"
            params = [*part, *names, start, end]
            buckets += self.conn.execute(
                f"SELECT device_id, name, (ts - ?) / ?, sum(avg), count(*) FROM metrics_1m"
                f" WHERE {where} GROUP BY device_id, name, (ts - ?) / ?",
                [start, step, *params, start, step],
            ).fetchall()
            # With max() as the only aggregate, SQLite takes the bare column from its row.
            last += [
                (d, n, a)
                for d, n, _ts, a in self.conn.execute(
                    f"SELECT device_id, name, max(ts), avg FROM metrics_1m WHERE {where}"
                    " GROUP BY device_id, name",
                    params,
                )
            ]
        return buckets, last
