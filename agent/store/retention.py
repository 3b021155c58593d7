"""Retention across aggregates: metrics, sent outbox rows and old journal runs by age, and
the bounds on the unsent outbox (``outbox_policy``), whose drops are always announced."""

from __future__ import annotations

import sqlite3
import time

from agent.store import events
from agent.store.base import StoreBase
from agent.store.outbox_policy import PendingInfo, choose_drops, seq_ranges
from protocol.reported import RowKind

# Sent rows are kept a while for diagnosis, then deleted.
SENT_RETENTION = 3600.0
JOURNAL_RETENTION = 7 * 86400.0
MAX_DROP_RANGES = 100


def enforce_outbox_bounds(c: sqlite3.Connection, max_bytes: int, max_age: float, now: float) -> int:
    """Drop unsent rows beyond the bounds (see ``outbox_policy``); returns rows dropped.

    The drop and the event announcing it (with the exact sequence ranges, so the hub can
    tell an announced gap from a lost message) commit together.
    """
    infos = [
        PendingInfo(*r)
        for r in c.execute("SELECT seq, kind, size, created_at FROM outbox WHERE sent_at IS NULL")
    ]
    drops = choose_drops(infos, max_bytes=max_bytes, max_age=max_age, now=now)
    if not drops:
        return 0
    kinds: dict[str, int] = {}
    by_seq = {i.seq: i for i in infos}
    for s in drops:
        kinds[by_seq[s].kind] = kinds.get(by_seq[s].kind, 0) + 1
    c.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in drops])
    ranges = seq_ranges(drops)
    severity = "warning" if set(kinds) <= {RowKind.METRICS_1M, RowKind.OBSERVED} else "error"
    events.append(
        c,
        "outbox.dropped",
        f"offline too long: dropped {len(drops)} unsent outbox rows "
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
        severity,
        {
            "count": len(drops),
            "kinds": kinds,
            "ranges": ranges[:MAX_DROP_RANGES],
            "ranges_truncated": len(ranges) > MAX_DROP_RANGES,
            "max_bytes": max_bytes,
            "max_age": max_age,
        },
        now,
    )
    return len(drops)


def prune_by_age(
    c: sqlite3.Connection, raw: float, minute: float, hour: float, now: float
) -> dict[str, int]:
    """Delete metrics, sent outbox rows and finished journal runs older than their bounds.
    Events are the append-only device log and are never pruned here."""
    out: dict[str, int] = {}
    out["raw"] = c.execute("DELETE FROM metric_samples WHERE ts < ?", (now - raw,)).rowcount
    out["1m"] = c.execute("DELETE FROM metrics_1m WHERE bucket < ?", (now - minute,)).rowcount
    out["1h"] = c.execute("DELETE FROM metrics_1h WHERE bucket < ?", (now - hour,)).rowcount
    out["sent"] = c.execute(
        "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?",
        (now - SENT_RETENTION,),
    ).rowcount
    old_runs = "SELECT id FROM journal_runs WHERE started_at < ? AND finished_at IS NOT NULL"
    c.execute(f"DELETE FROM journal_steps WHERE run_id IN ({old_runs})", (now - JOURNAL_RETENTION,))
    out["journal"] = c.execute(
        "DELETE FROM journal_runs WHERE started_at < ? AND finished_at IS NOT NULL",
        (now - JOURNAL_RETENTION,),
    ).rowcount
    return out


class RetentionStore(StoreBase):
    def enforce_outbox_bounds(
        self, *, max_bytes: int, max_age: float, now: float | None = None
    ) -> int:
        """Drop unsent rows beyond the bounds, announced by an ``outbox.dropped`` event."""
        now = time.time() if now is None else now
        return self.write_now(enforce_outbox_bounds, max_bytes, max_age, now)

    def prune(
        self,
        *,
        raw: float,
        minute: float,
        hour: float,
        outbox_max_bytes: int,
        outbox_max_age: float,
        now: float | None = None,
    ) -> dict[str, int]:
        """Apply retention to metrics, sent outbox rows and old journal runs, then the outbox
        bounds (two transactions, or one inside ``store.write``). Events are never pruned here."""
        now = time.time() if now is None else now
        out = self.write_now(prune_by_age, raw, minute, hour, now)
        out["outbox_dropped"] = self.enforce_outbox_bounds(
            max_bytes=outbox_max_bytes, max_age=outbox_max_age, now=now
        )
        return out
