"""Rollouts in the fleet store: the ``rollouts`` and ``rollout_targets`` tables, and the
device-level assignments a rollout writes phase by phase.

How a rollout composes with the resolution rule (``hub.desired``: device > group > tag):
when a device's phase starts, the rollout assigns its version to ``device:ID`` — the most
specific level, so it wins whatever the groups and tags say — and remembers the
device-level assignment it replaced (``prev_bundle``/``prev_version``, NULL for none) and
the id of the one it made (``assignment_id``). Abort gives back the previous one wherever
the rollout's own is still in place. Success assigns the version to the rollout's target
selector and removes the per-device assignments that are no longer needed (those that
replaced nothing and whose device resolves to the same version without them).

Functions take the ``Store`` and run on its writer thread; writes join the caller's ``tx()``.
"""

from __future__ import annotations

import calendar
import json
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from hub.desired import Assignment, resolve
from hub.errors import Conflict, Invalid, NotFound
from hub.rollouts import machine as m
from hub.rollouts.observe import Verdict, newest_generation, verdict_of
from hub.store import Store
from hub.timeutil import now_iso
from protocol.report import ReportRow
from protocol.reported import FINAL_STATUSES, RowKind
from sbutil.text import phase_name, plural

log = logging.getLogger(__name__)

ROLLOUT_COLUMNS = (
    "id, bundle, version, target_kind, target, status, reason, canary_percent, max_failures,"
    " failures_accepted, created_at, updated_at, phases, bake_s, max_failures_basis"
)
TARGET_COLUMNS = (
    "device_id, state, reason, phase, updated_at, written_at, assignment_id, prev_bundle,"
    " prev_version, base_generation, generation"
)


MAX_DEVICES_PAGE = 1000  # devices per rollouts.get answer: well under the 1 MiB reply limit


def chunks(ids: Sequence[str], size: int = 500) -> list[Sequence[str]]:
    """Keep IN lists far below SQLite's bound-variable limit, whatever the fleet size."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def new_id() -> str:
    return "ro-" + secrets.token_hex(4)


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


# --- reading -----------------------------------------------------------------------------
def get_row(store: Store, rollout_id: str) -> dict[str, Any]:
    row = store.row(f"SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?", (rollout_id,))
    if row is None:
        raise NotFound(f"no rollout {rollout_id!r}", field="id")
    return row


def target_rows(
    store: Store, rollout_id: str, *, limit: int | None = None, after: str | None = None
) -> list[dict[str, Any]]:
    """The rollout's devices by id (a page of them with ``limit``/``after``)."""
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
    return store.rows(sql, params)


def active_ids(store: Store) -> list[str]:
    return [
        r[0]
        for r in store.conn.execute(
            "SELECT id FROM rollouts WHERE status IN (?, ?) ORDER BY rowid",
            (m.RUNNING, m.PAUSED),
        )
    ]


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


def phase_rows(store: Store, rollout_id: str) -> list[dict[str, Any]]:
    return store.rows(
        "SELECT number, size, started_at, completed_at, failures_accepted FROM rollout_phases"
        " WHERE rollout_id = ? ORDER BY number",
        (rollout_id,),
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


def save_phases(store: Store, rollout_id: str, phases: Sequence[m.Phase]) -> None:
    """Write the phase records that differ from what is stored."""
    stored = {p.number: p for p in machine_phases(phase_rows(store, rollout_id))}
    with store.tx() as c:
        for p in phases:
            if stored.get(p.number) == p:
                continue
            c.execute(
                "UPDATE rollout_phases SET started_at = ?, completed_at = ?,"
                " failures_accepted = ? WHERE rollout_id = ? AND number = ?",
                (
                    None if p.started_at is None else iso(p.started_at),
                    None if p.completed_at is None else iso(p.completed_at),
                    p.failures_accepted,
                    rollout_id,
                    p.number,
                ),
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
        )
        for r in rows
    ]


def summary(store: Store, row: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The shape ``rollouts.list`` items and ``rollouts.get`` share (docs/rollouts.md),
    counted in SQL so a big rollout costs a few index scans, not a load of every row."""
    rid = row["id"]
    now = time.time() if now is None else now
    counts = dict.fromkeys(m.DEVICE_STATES, 0)
    per_phase: dict[int, dict[str, int]] = {}
    started: set[int] = set()
    for phase, state, n, written in store.conn.execute(
        "SELECT phase, state, count(*), count(written_at) FROM rollout_targets"
        " WHERE rollout_id = ? GROUP BY phase, state",
        (rid,),
    ):
        counts[state] += int(n)
        per_phase.setdefault(int(phase), dict.fromkeys(m.DEVICE_STATES, 0))[state] = int(n)
        if written:
            started.add(int(phase))
    offline = store.scalar(
        "SELECT count(*) FROM rollout_targets t JOIN devices d ON d.id = t.device_id"
        " WHERE t.rollout_id = ? AND t.state NOT IN (?, ?) AND d.status != 'online'",
        (rid, m.SUCCEEDED, m.FAILED),
    )
    limit = limit_of(row)
    bake = float(row.get("bake_s") or 0.0)
    stored_phases = phase_rows(store, rid)
    plan = machine_phases(stored_phases)
    total = sum(counts.values())
    phases = []
    for p, stored in zip(plan, stored_phases, strict=True):
        c = per_phase.get(p.number, dict.fromkeys(m.DEVICE_STATES, 0))
        state = m.phase_state(p, plan, started, bake, now)
        phases.append(
            {
                "number": p.number,
                "size": p.size,
                "state": state,
                "counts": c,
                "done": c[m.SUCCEEDED] + c[m.FAILED],
                "failed": c[m.FAILED],
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
        "offline": int(offline or 0),
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
    row = get_row(store, rollout_id)
    out = summary(store, row)
    if devices:
        page = target_rows(store, rollout_id, limit=limit + 1, after=after)
        out["devices"] = [device_row(t) for t in page[:limit]]
        out["devices_cursor"] = page[limit - 1]["device_id"] if len(page) > limit else None
    return out


def list_rollouts(
    store: Store, state: str | None, limit: int, before: int | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; the cursor is the rowid to continue below."""
    where: list[str] = []
    params: list[Any] = []
    if state is not None:
        where.append("status = ?")
        params.append(state)
    if before is not None:
        where.append("rowid < ?")
        params.append(before)
    rows = store.rows(
        f"SELECT rowid AS seq, {ROLLOUT_COLUMNS} FROM rollouts"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY rowid DESC LIMIT ?",
        [*params, limit + 1],
    )
    page = rows[:limit]
    items = [summary(store, r) for r in page]
    cursor = str(page[-1]["seq"]) if len(rows) > limit else None
    return items, cursor


# --- starting ----------------------------------------------------------------------------
def resolve_target(store: Store, kind: str, target: str) -> list[str]:
    """The devices a target selects now (decommissioned ones never)."""
    if kind == "device":
        sql = "SELECT id FROM devices WHERE id = ? AND decommissioned = 0"
    elif kind == "group":
        if not store.scalar("SELECT 1 FROM groups WHERE name = ?", (target,)):
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
    found = sorted(r[0] for r in store.conn.execute(sql, (target,)))
    if kind == "device" and not found:
        raise NotFound(f"no device {target!r} (or it is decommissioned)", field="target")
    return found


def create(
    store: Store,
    kind: str,
    target: str,
    bundle: str,
    version: str,
    canary_percent: int,
    max_failures: m.Share,
    steps: Sequence[m.Share] | None = None,
    bake: float = 0.0,
) -> str:
    """Record a new running rollout with its devices planned into phases (``steps``, or
    the canary and the rest). Nothing is written to any device yet: the controller starts
    the first phase on its next tick."""
    spec = "" if steps is None else ",".join(str(s) for s in steps)
    steps = m.canary_phases(canary_percent) if steps is None else steps
    with store.tx() as c:
        if not store.scalar(
            "SELECT 1 FROM bundle_versions WHERE bundle = ? AND version = ?", (bundle, version)
        ):
            raise NotFound(f"no bundle version {bundle}@{version}; push it first", "bundle")
        devices = resolve_target(store, kind, target)
        if not devices:
            raise Invalid(f"{kind}:{target} selects no devices", field="target")
        busy: list[dict[str, Any]] = []
        online: set[str] = set()
        for part in chunks(devices):
            marks = ",".join("?" * len(part))
            busy += store.rows(
                "SELECT t.device_id, r.id FROM rollout_targets t JOIN rollouts r"
                f" ON r.id = t.rollout_id WHERE r.status IN (?, ?) AND t.device_id IN ({marks})"
                " ORDER BY t.device_id LIMIT 5",
                [m.RUNNING, m.PAUSED, *part],
            )
            online.update(
                r[0]
                for r in c.execute(
                    f"SELECT id FROM devices WHERE status = 'online' AND id IN ({marks})", part
                )
            )
        if busy:
            names = ", ".join(f"{b['device_id']} ({b['id']})" for b in busy[:5])
            raise Conflict(
                f"device(s) already in an active rollout: {names}; finish or abort it first",
                field="target",
            )
        phases = m.plan_phases(devices, steps, online)
        sizes = m.phase_sizes(len(devices), steps)
        rollout_id = new_id()
        now = now_iso()
        c.execute(
            "INSERT INTO rollouts (id, bundle, version, target_kind, target, status,"
            " canary_percent, max_failures, max_failures_basis, phases, bake_s, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rollout_id, bundle, version, kind, target, m.RUNNING, canary_percent,
             max_failures.count or 0, max_failures.basis, spec, bake, now, now),
        )  # fmt: skip
        c.executemany(
            "INSERT INTO rollout_phases (rollout_id, number, size) VALUES (?, ?, ?)",
            [(rollout_id, n, size) for n, size in enumerate(sizes, start=1)],
        )
        c.executemany(
            "INSERT INTO rollout_targets (rollout_id, device_id, state, reason, phase,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (rollout_id, d, m.PENDING, f"waiting for {phase_name(n)}", n, now)
                for d, n in sorted(phases.items())
            ],
        )
        store.add_event(
            None,
            "rollout.started",
            f"rollout {rollout_id}: {bundle}@{version} to {kind}:{target},"
            f" {plural(len(devices), 'device')} in {plural(len(sizes), 'phase')}"
            f" ({'/'.join(map(str, sizes))})",
            {"rollout": rollout_id, "devices": len(devices), "phases": sizes},
        )
    log.info(
        "rollout %s started: %s@%s to %s:%s (%d devices in phases %s, max failures %s,"
        " bake %gs)",
        rollout_id, bundle, version, kind, target, len(devices), "/".join(map(str, sizes)),
        max_failures, bake,
    )  # fmt: skip
    return rollout_id


# --- desired writes ----------------------------------------------------------------------
def _device_assignment(store: Store, device_id: str) -> dict[str, Any] | None:
    return store.row(
        "SELECT id, bundle, version FROM assignments WHERE target_kind = 'device' AND target = ?",
        (device_id,),
    )


def track_desired(store: Store, device_ids: list[str], before: dict[str, Any]) -> list[str]:
    """Devices whose resolved desired bundle changed since ``before``, each with a
    ``desired.changed`` event as the API writes it."""
    after = store.resolve_desired(device_ids)
    changed = []
    for d in device_ids:
        old, new = before.get(d), after.get(d)
        old_ref = None if old is None else old.ref
        new_ref = None if new is None else new.ref
        if old_ref != new_ref:
            changed.append(d)
            store.add_event(
                d,
                "desired.changed",
                f"{old_ref or 'nothing'} -> {new_ref or 'nothing'}",
                {"from": old_ref, "to": new_ref},
            )
    return changed


def write_phase(store: Store, row: dict[str, Any], phase: int) -> list[str]:
    """Assign the rollout's version to each device of ``phase`` (device level), remembering
    what it replaces. Returns every device of the phase (all need their desired document
    recomputed, as the rollout id in it changed even where the version did not)."""
    rollout_id = row["id"]
    with store.tx() as c:
        devices = [
            r[0]
            for r in c.execute(
                "SELECT device_id FROM rollout_targets WHERE rollout_id = ? AND phase = ?"
                " AND written_at IS NULL ORDER BY device_id",
                (rollout_id, phase),
            )
        ]
        if not devices:
            return []
        before = store.resolve_desired(devices)
        published = _published_generations(store, devices)
        now = now_iso()
        for d in devices:
            prev = _device_assignment(store, d)
            reported = store.get_reported(d)
            base = max(
                (
                    g
                    for g in (
                        newest_generation(reported["state"] if reported else None),
                        published.get(d),
                    )
                    if g is not None
                ),
                default=None,
            )
            ours = store.assign("device", d, row["bundle"], row["version"])
            c.execute(
                "UPDATE rollout_targets SET written_at = ?, assignment_id = ?, prev_bundle = ?,"
                " prev_version = ?, base_generation = ?, state = ?, reason = ?, updated_at = ?"
                " WHERE rollout_id = ? AND device_id = ?",
                (now, ours.id, prev["bundle"] if prev else None,
                 prev["version"] if prev else None, base, m.PENDING,
                 "desired state written; waiting for the device", now, rollout_id, d),
            )  # fmt: skip
            store.add_event(
                d,
                "rollout.desired",
                f"rollout {rollout_id} {phase_name(phase)}: desired {ref(row)}",
                {"rollout": rollout_id, "phase": phase, "to": ref(row),
                 "previous": None if prev is None else f"{prev['bundle']}@{prev['version']}"},
            )  # fmt: skip
        track_desired(store, devices, before)
    for d in devices:
        log.info(
            "rollout %s phase %d: desired %s", rollout_id, phase, ref(row), extra={"device": d}
        )
    return devices


def _published_generations(store: Store, devices: list[str]) -> dict[str, int]:
    """The generation last written to each device's KV key, when the sync side records it."""
    if not store.scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'desired_published'"
    ):
        return {}
    return {
        r[0]: int(r[1])
        for part in chunks(devices)
        for r in store.conn.execute(
            "SELECT device_id, generation FROM desired_published WHERE device_id IN"
            f" ({','.join('?' * len(part))})",
            part,
        )
    }


def restore(store: Store, row: dict[str, Any]) -> list[str]:
    """Abort: give each written device back its previous device-level assignment where the
    rollout's own is still in place (``machine.restores``). Returns the devices touched."""
    targets = store.rows(
        "SELECT device_id, assignment_id, prev_bundle, prev_version FROM rollout_targets"
        " WHERE rollout_id = ? AND written_at IS NOT NULL ORDER BY device_id",
        (row["id"],),
    )
    written = [
        m.Written(
            t["device_id"],
            t["assignment_id"],
            None if t["prev_bundle"] is None else (t["prev_bundle"], t["prev_version"]),
        )
        for t in targets
    ]
    current: dict[str, int | None] = {}
    for w in written:
        a = _device_assignment(store, w.device_id)
        current[w.device_id] = None if a is None else int(a["id"])
    plan = m.restores(written, current)
    with store.tx():
        ids = [r.device_id for r in plan]
        before = store.resolve_desired(ids) if ids else {}
        for r in plan:
            if r.previous is None:
                store.unassign("device", r.device_id)
            else:
                store.assign("device", r.device_id, *r.previous)
            back = "nothing" if r.previous is None else "@".join(r.previous)
            store.add_event(
                r.device_id,
                "rollout.restored",
                f"rollout {row['id']} aborted: device assignment back to {back}",
                {"rollout": row["id"], "to": None if r.previous is None else back},
            )
            log.info("rollout %s aborted: restored %s", row["id"], back,
                     extra={"device": r.device_id})  # fmt: skip
        if ids:
            track_desired(store, ids, before)
    return [r.device_id for r in plan]


def complete(store: Store, row: dict[str, Any]) -> list[str]:
    """Success: the target selector gets the version (so devices that join it later get it
    too), and the per-device assignments that replaced nothing are dropped where the device
    resolves to the same version without them. Returns devices whose resolution changed
    (none, normally: the point is to leave every device on the version it runs)."""
    kind, target = row["target_kind"], row["target"]
    with store.tx():
        targets = store.rows(
            "SELECT device_id, assignment_id, prev_bundle FROM rollout_targets"
            " WHERE rollout_id = ? AND written_at IS NOT NULL",
            (row["id"],),
        )
        ids = [t["device_id"] for t in targets]
        before = store.resolve_desired(ids)
        if kind != "device":
            store.assign(kind, target, row["bundle"], row["version"])
        assignments = store.list_assignments()
        members = {mb.device_id: mb for mb in store.memberships(ids)}
        for t in targets:
            d = t["device_id"]
            current = _device_assignment(store, d)
            if (
                kind == "device"
                or t["prev_bundle"] is not None
                or current is None
                or int(current["id"]) != t["assignment_id"]
                or d not in members
            ):
                continue
            without = resolve(members[d], [a for a in assignments if a.id != current["id"]])
            if _same(without, row):
                store.unassign("device", d)
        return track_desired(store, ids, before)


def _same(a: Assignment | None, row: dict[str, Any]) -> bool:
    return a is not None and a.bundle == row["bundle"] and a.version == row["version"]


# --- status ------------------------------------------------------------------------------
def set_status(store: Store, rollout: dict[str, Any], new: m.Rollout) -> None:
    with store.tx() as c:
        c.execute(
            "UPDATE rollouts SET status = ?, reason = ?, failures_accepted = ?, updated_at = ?"
            " WHERE id = ?",
            (new.status, new.reason, new.failures_accepted, now_iso(), rollout["id"]),
        )
        if new.status not in m.ACTIVE:
            forget_verdicts(store, rollout["id"], None)
        if new.status != rollout["status"]:
            store.add_event(
                None,
                f"rollout.{new.status}",
                f"rollout {rollout['id']} {new.status}" + (f": {new.reason}" if new.reason else ""),
                {"rollout": rollout["id"], "from": rollout["status"], "to": new.status},
            )


def save_targets(
    store: Store,
    rollout_id: str,
    targets: Sequence[m.Target],
    changed: Sequence[str],
) -> None:
    """Persist the devices whose state or reason changed, and the generation each
    acknowledged; a state change is also an event in the device's log."""
    by_id = {t.device_id: t for t in targets}
    now = now_iso()
    with store.tx() as c:
        for t in targets:
            if t.observation.generation is not None:
                c.execute(
                    "UPDATE rollout_targets SET generation = ? WHERE rollout_id = ?"
                    " AND device_id = ? AND (generation IS NULL OR generation < ?)",
                    (t.observation.generation, rollout_id, t.device_id, t.observation.generation),
                )
        for d in changed:
            t = by_id[d]
            old = store.row(
                "SELECT state FROM rollout_targets WHERE rollout_id = ? AND device_id = ?",
                (rollout_id, d),
            )
            c.execute(
                "UPDATE rollout_targets SET state = ?, reason = ?, updated_at = ?"
                " WHERE rollout_id = ? AND device_id = ?",
                (t.state, t.reason, now, rollout_id, d),
            )
            if old is not None and old["state"] != t.state:
                store.add_event(
                    d,
                    f"rollout.{t.state.lower()}",
                    f"rollout {rollout_id}: {old['state']} -> {t.state}"
                    + (f" ({t.reason})" if t.reason else ""),
                    {"rollout": rollout_id, "from": old["state"], "to": t.state,
                     "reason": t.reason},
                )  # fmt: skip
                log.info(
                    "rollout %s: %s -> %s%s", rollout_id, old["state"], t.state,
                    f" ({t.reason})" if t.reason else "", extra={"device": d},
                )  # fmt: skip


def reported_texts(store: Store, device_ids: list[str]) -> dict[str, str]:
    """Each device's reported-state document as stored (text: a caller that has seen the
    same text before need not parse it again)."""
    out: dict[str, str] = {}
    for part in chunks(device_ids):
        for d, doc in store.conn.execute(
            f"SELECT device_id, doc FROM reported_state WHERE device_id IN"
            f" ({','.join('?' * len(part))})",
            part,
        ):
            out[d] = doc
    return out


def parse_doc(device_id: str, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        log.warning("reported state is not JSON", extra={"device": device_id})
        return None


def reported_docs(store: Store, device_ids: list[str]) -> dict[str, Any]:
    texts = reported_texts(store, device_ids)
    return {d: doc for d, t in texts.items() if (doc := parse_doc(d, t)) is not None}


# --- deployment verdicts -----------------------------------------------------------------
def record_deployments(store: Store, device_id: str, rows: Sequence[ReportRow]) -> None:
    """Ingest row handler (``hub.sync.apply``, inside the ingest transaction): keep every
    ``deployment`` row of a device that is in an active rollout, written and not final, by
    generation. The first final verdict of a generation sticks (a device that later
    re-enters it cannot erase it); the rollout engine reads them (``verdicts``)."""
    found = [v for r in rows if r.kind == RowKind.DEPLOYMENT and (v := verdict_of(r.payload))]
    if not found:
        return
    target = store.row(
        "SELECT t.rollout_id FROM rollout_targets t JOIN rollouts r ON r.id = t.rollout_id"
        " WHERE t.device_id = ? AND r.status IN (?, ?) AND t.written_at IS NOT NULL"
        " AND t.state NOT IN (?, ?)",
        (device_id, m.RUNNING, m.PAUSED, m.SUCCEEDED, m.FAILED),
    )
    if target is None:
        return
    now = now_iso()
    final = tuple(sorted(FINAL_STATUSES))
    marks = ",".join("?" * len(final))
    store.conn.executemany(
        "INSERT INTO rollout_deployments (rollout_id, device_id, generation, bundle_ref,"
        " status, reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (rollout_id, device_id, generation) DO UPDATE SET"
        " bundle_ref = excluded.bundle_ref, status = excluded.status,"
        " reason = excluded.reason, updated_at = excluded.updated_at"
        f" WHERE rollout_deployments.status NOT IN ({marks})",
        [
            (target["rollout_id"], device_id, v.generation, v.bundle_ref, v.status, v.reason,
             now, *final)
            for v in found
        ],
    )  # fmt: skip


def verdicts(store: Store, rollout_id: str, device_ids: list[str]) -> dict[str, list[Verdict]]:
    out: dict[str, list[Verdict]] = {}
    for part in chunks(device_ids):
        for d, gen, ref, status, reason in store.conn.execute(
            "SELECT device_id, generation, bundle_ref, status, reason FROM rollout_deployments"
            f" WHERE rollout_id = ? AND device_id IN ({','.join('?' * len(part))})",
            [rollout_id, *part],
        ):
            out.setdefault(d, []).append(Verdict(int(gen), ref, status, reason))
    return out


def forget_verdicts(store: Store, rollout_id: str, device_ids: Sequence[str] | None) -> None:
    """Drop the verdicts nothing will read again: of devices now final (or, with None, of
    the whole rollout, once it is no longer active)."""
    if device_ids is None:
        store.conn.execute("DELETE FROM rollout_deployments WHERE rollout_id = ?", (rollout_id,))
        return
    for part in chunks(list(device_ids)):
        store.conn.execute(
            "DELETE FROM rollout_deployments WHERE rollout_id = ?"
            f" AND device_id IN ({','.join('?' * len(part))})",
            [rollout_id, *part],
        )
