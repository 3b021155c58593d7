"""Rollouts as the rules and the API see them: the stored rows (``hub.store.rollouts``)
turned into the state machine's types (``hub.rollouts.machine``) and into the shapes
``rollouts.list`` and ``rollouts.get`` answer with (docs/rollouts.md).

Functions take the ``Store`` and run on its writer thread.
"""

from __future__ import annotations

import calendar
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from hub.rollouts import machine as m
from hub.rollouts.observe import Verdict
from hub.store import Store

log = logging.getLogger(__name__)

MAX_DEVICES_PAGE = 1000  # devices per rollouts.get answer: well under the 1 MiB reply limit


def ref(r: dict[str, Any]) -> str:
    return f"{r['bundle']}@{r['version']}"


def epoch(iso: str | None) -> float | None:
    """Seconds since the epoch from a stored ``now_iso`` stamp (UTC, milliseconds)."""
    if not iso:
        return None
    whole = calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
    return whole + (int(iso[20:23]) / 1000 if len(iso) >= 23 else 0.0)


def iso(t: float) -> str:
    """``epoch``'s inverse, rounded to the millisecond so a stamp read back and written
    again is the same text (``now_iso`` truncates, which would drift)."""
    secs, milli = divmod(round(t * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{milli:03d}Z"


# --- stored rows as machine types --------------------------------------------------------
def limit_of(row: dict[str, Any]) -> m.Share:
    basis = row.get("max_failures_basis")
    return (
        m.Share(basis=int(basis)) if basis is not None else m.Share(count=int(row["max_failures"]))
    )


def machine_rollout(row: dict[str, Any]) -> m.Rollout:
    return m.Rollout(
        row["status"],
        limit_of(row),
        int(row["failures_accepted"]),
        row["reason"],
        float(row.get("bake_s") or 0.0),
    )


def machine_phases(rows: Sequence[dict[str, Any]]) -> tuple[m.Phase, ...]:
    return tuple(
        m.Phase(
            int(r["number"]),
            int(r["size"]),
            epoch(r["started_at"]),
            epoch(r["completed_at"]),
            int(r["failures_accepted"]),
        )
        for r in rows
    )


def machine_targets(rows: Sequence[dict[str, Any]]) -> list[m.Target]:
    return [
        m.Target(
            r["device_id"],
            int(r["phase"]),
            r["state"],
            r["reason"],
            r["written_at"] is not None,
            r.get("device_status") == "online",
            decommissioned=bool(r.get("decommissioned")),
            heard_at=epoch(r.get("last_seen")) or 0.0,
        )
        for r in rows
    ]


def active_ids(store: Store) -> list[str]:
    return store.rollout_ids((m.RUNNING, m.PAUSED))


def parse_doc(device_id: str, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        log.warning("reported state is not JSON", extra={"device": device_id})
        return None


def reported_docs(store: Store, device_ids: list[str]) -> dict[str, Any]:
    texts = store.reported_texts(device_ids)
    return {d: doc for d, t in texts.items() if (doc := parse_doc(d, t)) is not None}


def verdicts(store: Store, rollout_id: str, device_ids: list[str]) -> dict[str, list[Verdict]]:
    out: dict[str, list[Verdict]] = {}
    for d, gen, bundle_ref, status, reason in store.deployment_rows(rollout_id, device_ids):
        out.setdefault(d, []).append(Verdict(gen, bundle_ref, status, reason))
    return out


# --- answers -----------------------------------------------------------------------------
def summary(store: Store, row: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The shape ``rollouts.list`` items and ``rollouts.get`` share (docs/rollouts.md),
    counted in SQL so a big rollout costs a few index scans, not a load of every row."""
    rid = row["id"]
    now = time.time() if now is None else now
    counts = dict.fromkeys(m.DEVICE_STATES, 0)
    per_phase: dict[int, dict[str, int]] = {}
    started: set[int] = set()
    for phase, state, n, written in store.rollout_state_counts(rid):
        counts[state] += n
        per_phase.setdefault(phase, dict.fromkeys(m.DEVICE_STATES, 0))[state] = n
        if written:
            started.add(phase)
    offline = store.rollout_offline_count(rid, (m.SUCCEEDED, m.FAILED))
    deferred = store.rollout_deferred_counts(rid, m.PENDING, m.DEFERRED)
    limit = limit_of(row)
    bake = float(row.get("bake_s") or 0.0)
    stored_phases = store.rollout_phase_rows(rid)
    plan = machine_phases(stored_phases)
    total = sum(counts.values())
    phases = []
    for p, stored in zip(plan, stored_phases, strict=True):
        c = per_phase.get(p.number, dict.fromkeys(m.DEVICE_STATES, 0))
        quiet = 0
        if (
            p.completed_at is not None
            and bake > 0
            and now >= p.completed_at + bake
            and row["status"] in m.ACTIVE
            and p.number == max(started, default=0)
            and p.number < len(plan)
        ):
            # only the newest started phase of an active rollout, its bake over and a phase
            # after it, can wait on word from its devices (a list of finished rollouts
            # costs no query here)
            quiet = store.rollout_unheard_count(
                rid, p.number, m.SUCCEEDED, iso(p.completed_at + bake)
            )
        state = m.phase_state(p, plan, started, bake, now, quiet)
        phases.append(
            {
                "number": p.number,
                "size": p.size,
                "state": state,
                "counts": c,
                "done": c[m.SUCCEEDED] + c[m.FAILED],
                "failed": c[m.FAILED],
                "deferred": deferred.get(p.number, 0),
                "unheard": quiet if state == m.PHASE_BAKING else 0,
                "max_failures": m.allowed_failures(limit, p.size),
                "failures_accepted": p.failures_accepted,
                "started_at": stored["started_at"],
                "completed_at": stored["completed_at"],
                "bake_left": round(m.bake_left(p, bake, now), 1) if state == m.PHASE_BAKING else 0,
            }
        )
    current = max(started, default=None)
    return {
        "id": rid,
        "bundle": row["bundle"],
        "version": row["version"],
        "target": f"{row['target_kind']}:{row['target']}",
        "state": row["status"],
        "reason": row["reason"],
        "canary_percent": row["canary_percent"],
        "steps": row.get("phases")
        or ",".join(str(s) for s in m.canary_phases(row["canary_percent"])),
        "bake": bake,
        "max_failures": str(limit) if limit.is_percent else limit.count,
        "max_failures_allowed": m.allowed_failures(limit, total),
        "failures_accepted": row["failures_accepted"],
        "phase": current,
        "phase_count": len(plan),
        "phases": phases,
        "counts": counts,
        "total": total,
        "offline": offline,
        "deferred": sum(deferred.values()),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def device_row(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "device": t["device_id"],
        "state": t["state"],
        "reason": t["reason"],
        "phase": t["phase"],
        "online": t.get("device_status") == "online",
        "status": t.get("device_status"),
        "last_seen": t.get("last_seen"),
        "generation": t["generation"],
        "previous": (
            f"{t['prev_bundle']}@{t['prev_version']}" if t["prev_bundle"] is not None else None
        ),
        "updated_at": t["updated_at"],
    }


def describe(
    store: Store,
    rollout_id: str,
    *,
    devices: bool = True,
    limit: int = MAX_DEVICES_PAGE,
    after: str | None = None,
) -> dict[str, Any]:
    """The summary, plus one page of devices (by id) when ``devices``; ``devices_cursor``
    continues it (None: the last page)."""
    row = store.rollout_row(rollout_id)
    out = summary(store, row)
    if devices:
        page = store.rollout_target_rows(rollout_id, limit=limit + 1, after=after)
        out["devices"] = [device_row(t) for t in page[:limit]]
        out["devices_cursor"] = page[limit - 1]["device_id"] if len(page) > limit else None
    return out


def list_rollouts(
    store: Store, state: str | None, limit: int, before: int | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; the cursor is the rowid to continue below."""
    rows = store.rollout_rows(state, limit + 1, before)
    page = rows[:limit]
    items = [summary(store, r) for r in page]
    cursor = str(page[-1]["seq"]) if len(rows) > limit else None
    return items, cursor
