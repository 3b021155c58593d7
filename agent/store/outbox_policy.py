"""Pure choice of which unsent outbox rows to drop when the device has been offline too long.

Order of sacrifice: superseded observed-state snapshots (a newer full snapshot is queued, so
nothing is lost), then the oldest metric rollups, then, only as a last resort when the size
bound still is not met, the oldest other rows (events and state changes). The age bound
applies to snapshots and rollups only: an old event is still worth delivering, so only the
size bound can drop it. The store records an event for every drop, so nothing vanishes
silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.reported import RowKind

ROLLUP_KIND = RowKind.METRICS_1M.value
OBSERVED_KIND = RowKind.OBSERVED.value


@dataclass(frozen=True)
class PendingInfo:
    seq: int
    kind: str
    size: int
    created_at: float


def choose_drops(
    rows: list[PendingInfo], *, max_bytes: int, max_age: float, now: float
) -> list[int]:
    """Sequence numbers to drop so the rest fit ``max_bytes`` and are younger than ``max_age``."""
    rows = sorted(rows, key=lambda r: r.seq)
    newest_observed = max((r.seq for r in rows if r.kind == OBSERVED_KIND), default=None)

    def rank(r: PendingInfo) -> int:
        if r.kind == OBSERVED_KIND and r.seq != newest_observed:
            return 0
        if r.kind == ROLLUP_KIND:
            return 1
        return 2

    drop: set[int] = {r.seq for r in rows if rank(r) < 2 and r.created_at < now - max_age}
    total = sum(r.size for r in rows if r.seq not in drop)
    if total <= max_bytes:
        return sorted(drop)

    for r in sorted((r for r in rows if r.seq not in drop), key=lambda r: (rank(r), r.seq)):
        if total <= max_bytes:
            break
        drop.add(r.seq)
        total -= r.size
    return sorted(drop)


def seq_ranges(seqs: list[int]) -> list[list[int]]:
    """Collapse sorted sequence numbers into inclusive ``[first, last]`` ranges."""
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out
