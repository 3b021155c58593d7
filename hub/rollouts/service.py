"""What a rollout does to the fleet: start one, write its phases' device-level assignments,
give them back on abort, hand the version to the target on success, and persist what the
engine decided. The SQL lives in the store (``hub.store.rollouts``); the rules here.

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

import logging
import secrets
from collections.abc import Sequence
from typing import Any

from hub.desired import Assignment, resolve
from hub.errors import Conflict, Invalid, NotFound
from hub.rollouts import machine as m
from hub.rollouts.observe import newest_generation, verdict_of
from hub.rollouts.views import iso, machine_phases, ref
from hub.store import Store
from hub.timeutil import now_iso
from protocol.report import ReportRow
from protocol.reported import FINAL_STATUSES, RowKind
from sbutil.text import phase_name, plural

log = logging.getLogger(__name__)

ACTIVE_STATES = (m.RUNNING, m.PAUSED)  # in this order: the SQL's parameters
FINAL_TARGET_STATES = (m.SUCCEEDED, m.FAILED)


def new_id() -> str:
    return "ro-" + secrets.token_hex(4)


# --- starting ----------------------------------------------------------------------------
def resolve_target(store: Store, kind: str, target: str) -> list[str]:
    """The devices a target selects now (decommissioned ones never)."""
    found = store.rollout_selects(kind, target)
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
    with store.tx():
        if not store.scalar(
            "SELECT 1 FROM bundle_versions WHERE bundle = ? AND version = ?", (bundle, version)
        ):
            raise NotFound(f"no bundle version {bundle}@{version}; push it first", "bundle")
        devices = resolve_target(store, kind, target)
        if not devices:
            raise Invalid(f"{kind}:{target} selects no devices", field="target")
        busy = store.busy_rollout_targets(devices, ACTIVE_STATES)
        online = store.online_among(devices)
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
        store.insert_rollout(
            {"id": rollout_id, "bundle": bundle, "version": version, "target_kind": kind,
             "target": target, "status": m.RUNNING, "canary_percent": canary_percent,
             "max_failures": max_failures.count or 0,
             "max_failures_basis": max_failures.basis, "phases": spec, "bake_s": bake,
             "created_at": now, "updated_at": now},
            sizes,
            [(d, n, m.PENDING, f"waiting for {phase_name(n)}") for d, n in sorted(phases.items())],
        )  # fmt: skip
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
    with store.tx():
        devices = store.unwritten_phase_devices(rollout_id, phase)
        if not devices:
            return []
        before = store.resolve_desired(devices)
        published = store.published_generations(devices)
        now = now_iso()
        for d in devices:
            prev = store.device_assignment(d)
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
            store.mark_target_written(
                rollout_id,
                d,
                {"written_at": now, "assignment_id": ours.id,
                 "prev_bundle": prev["bundle"] if prev else None,
                 "prev_version": prev["version"] if prev else None, "base_generation": base,
                 "state": m.PENDING, "reason": "desired state written; waiting for the device",
                 "updated_at": now},
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


def restore(store: Store, row: dict[str, Any]) -> list[str]:
    """Abort: give each written device back its previous device-level assignment where the
    rollout's own is still in place (``machine.restores``). Returns the devices touched."""
    written = [
        m.Written(
            t["device_id"],
            t["assignment_id"],
            None if t["prev_bundle"] is None else (t["prev_bundle"], t["prev_version"]),
        )
        for t in store.written_targets(row["id"])
    ]
    current: dict[str, int | None] = {}
    for w in written:
        a = store.device_assignment(w.device_id)
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
        targets = store.written_targets(row["id"])
        ids = [t["device_id"] for t in targets]
        before = store.resolve_desired(ids)
        if kind != "device":
            store.assign(kind, target, row["bundle"], row["version"])
        assignments = store.list_assignments()
        members = {mb.device_id: mb for mb in store.memberships(ids)}
        for t in targets:
            d = t["device_id"]
            current = store.device_assignment(d)
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


# --- what the engine decided ---------------------------------------------------------------
def set_status(store: Store, rollout: dict[str, Any], new: m.Rollout) -> None:
    with store.tx():
        store.set_rollout_status(
            rollout["id"], new.status, new.reason, new.failures_accepted, now_iso()
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


def save_phases(store: Store, rollout_id: str, phases: Sequence[m.Phase]) -> None:
    """Write the phase records that differ from what is stored."""
    stored = {p.number: p for p in machine_phases(store.rollout_phase_rows(rollout_id))}
    with store.tx():
        for p in phases:
            if stored.get(p.number) == p:
                continue
            store.update_rollout_phase(
                rollout_id,
                p.number,
                None if p.started_at is None else iso(p.started_at),
                None if p.completed_at is None else iso(p.completed_at),
                p.failures_accepted,
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
    with store.tx():
        for t in targets:
            if t.observation.generation is not None:
                store.raise_target_generation(rollout_id, t.device_id, t.observation.generation)
        for d in changed:
            t = by_id[d]
            old = store.target_state(rollout_id, d)
            store.set_target_state(rollout_id, d, t.state, t.reason, now)
            if old is not None and old != t.state:
                store.add_event(
                    d,
                    f"rollout.{t.state.lower()}",
                    f"rollout {rollout_id}: {old} -> {t.state}"
                    + (f" ({t.reason})" if t.reason else ""),
                    {"rollout": rollout_id, "from": old, "to": t.state, "reason": t.reason},
                )
                log.info(
                    "rollout %s: %s -> %s%s", rollout_id, old, t.state,
                    f" ({t.reason})" if t.reason else "", extra={"device": d},
                )  # fmt: skip


# --- deployment verdicts -----------------------------------------------------------------
def record_deployments(store: Store, device_id: str, rows: Sequence[ReportRow]) -> None:
    """Ingest row handler (``hub.sync.apply``, inside the ingest transaction): keep every
    ``deployment`` row of a device that is in an active rollout, written and not final, by
    generation. The first final verdict of a generation sticks (a device that later
    re-enters it cannot erase it); the rollout engine reads them (``views.verdicts``)."""
    found = [v for r in rows if r.kind == RowKind.DEPLOYMENT and (v := verdict_of(r.payload))]
    if not found:
        return
    rollout_id = store.rollout_of_device(device_id, ACTIVE_STATES, FINAL_TARGET_STATES)
    if rollout_id is None:
        return
    store.upsert_deployments(
        rollout_id,
        device_id,
        [(v.generation, v.bundle_ref, v.status, v.reason) for v in found],
        now_iso(),
        tuple(sorted(FINAL_STATUSES)),
    )


def forget_verdicts(store: Store, rollout_id: str, device_ids: Sequence[str] | None) -> None:
    """Drop the verdicts nothing will read again: of devices now final (or, with None, of
    the whole rollout, once it is no longer active)."""
    store.delete_deployments(rollout_id, None if device_ids is None else list(device_ids))
