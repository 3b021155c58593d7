"""What every handler shares: the caller, change notices, the outcome, and the helpers that
record which devices' desired bundle a write changed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hub.bus import DESIRED_STALE
from hub.desired import Assignment
from hub.store import Store

T = TypeVar("T")
log = logging.getLogger(__name__)
DAY = 86_400


@dataclass(frozen=True)
class Caller:
    key_id: str
    name: str
    role: str


@dataclass
class Change:
    kind: str  # devices, groups, bundles, assignments, desired, tokens, keys
    action: str
    data: dict[str, Any]


@dataclass
class Outcome:
    result: dict[str, Any]
    changes: list[Change] = field(default_factory=list)


Handler = Callable[[Store, dict[str, Any], Caller], Outcome]


def _ref(a: Assignment | None) -> str | None:
    return None if a is None else a.ref


def _via(a: Assignment | None) -> dict[str, Any] | None:
    if a is None:
        return None
    return {"bundle": a.bundle, "version": a.version, "via": f"{a.target_kind}:{a.target}"}


def stale(devices: Iterable[str]) -> list[Change]:
    """Ask the desired writer to re-resolve these devices' documents (nothing when none).
    The writer puts the ones that differ and only then publishes the ``desired`` notice
    (``hub.bus.DESIRED_STALE``), so a write that leaves every document as it was is silent."""
    ids = sorted(set(devices))
    return [Change(*DESIRED_STALE, {"devices": ids})] if ids else []


def _tracking_desired(
    store: Store, affected: list[str] | None, write: Callable[[], T]
) -> tuple[T, list[Change]]:
    """Run ``write`` in one transaction and record which devices' desired bundle it changed.

    The changes ask the desired writer to re-resolve those devices (``stale``).
    """
    with store.tx():
        before = store.resolve_desired(affected)
        out = write()
        after = store.resolve_desired(affected)
        changed = sorted(d for d in after if _ref(after[d]) != _ref(before.get(d)))
        for d in changed:
            old, new = _ref(before.get(d)), _ref(after[d])
            log.info(
                "desired bundle %s -> %s", old or "nothing", new or "nothing", extra={"device": d}
            )
            store.add_event(
                d,
                "desired.changed",
                f"{old or 'nothing'} -> {new or 'nothing'}",
                {"from": old, "to": new},
            )
    return out, stale(changed)


def _devices_for_target(store: Store, kind: str, target: str) -> list[str]:
    if kind == "device":
        return [target]
    if kind == "group":
        sql = "SELECT device_id FROM group_members WHERE group_name = ?"
    else:
        sql = "SELECT device_id FROM device_tags WHERE tag = ?"
    return [r[0] for r in store.conn.execute(sql, (target,))]


def _live(store: Store, ids: list[str]) -> list[str]:
    """The ones of ``ids`` not decommissioned (a decommissioned device runs nothing)."""
    out: list[str] = []
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        out += [
            r[0]
            for r in store.conn.execute(
                f"SELECT id FROM devices WHERE decommissioned = 0 AND id IN ({','.join('?' * len(part))})",
                part,
            )
        ]
    return out
