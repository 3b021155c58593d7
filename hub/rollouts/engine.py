"""One evaluation of every active rollout against the store: observe, decide, persist.

Runs on the store's writer thread (no NATS here); the controller then publishes the desired
documents and the change notices this returns. Each rollout is handled in its own
transaction, so one bad rollout cannot hold back the others.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from hub.rollouts import machine as m
from hub.rollouts import observe
from hub.rollouts import store as rs
from hub.store import Store

log = logging.getLogger(__name__)


@dataclass
class TickResult:
    publish: list[str] = field(default_factory=list)  # recompute these devices' desired docs
    desired_changed: list[str] = field(default_factory=list)
    notices: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (action, data)
    active: int = 0  # rollouts running or paused when the tick began


def evaluate(store: Store, rollout_id: str, out: TickResult, now: float | None = None) -> None:
    now = time.time() if now is None else now
    with store.tx():
        row = rs.get_row(store, rollout_id)
        if row["status"] not in m.ACTIVE:
            return
        rows = rs.target_rows(store, rollout_id)
        before = rs.machine_rollout(row)
        plan = rs.machine_phases(rs.phase_rows(store, rollout_id))
        started = {int(r["phase"]) for r in rows if r["written_at"] is not None}
        baking = {
            p.number
            for p in plan
            if m.phase_state(p, plan, started, before.bake, now) == m.PHASE_BAKING
        }
        # Only devices that can still move need their report read: unwritten ones have
        # nothing to report yet and final states stick (a big rollout gets cheaper as it
        # goes) — except the Succeeded ones of a baking phase, which must stay healthy.
        live = [
            r["device_id"]
            for r in rows
            if r["written_at"] is not None and r["state"] not in m.FINAL_DEVICE_STATES
        ]
        watched = [
            r["device_id"] for r in rows if r["state"] == m.SUCCEEDED and int(r["phase"]) in baking
        ]
        docs = rs.reported_docs(store, live + watched)
        # Every deployment row of those devices, by generation (the newest row in the
        # report is a rollback target's once a rollback finished).
        verdicts = rs.verdicts(store, rollout_id, live)
        ref = rs.ref(row)
        targets = []
        for r, t in zip(rows, rs.machine_targets(rows), strict=True):
            obs = m.Observation()
            if t.state == m.SUCCEEDED and t.phase in baking:
                problem = observe.bake_problem(docs.get(t.device_id), r["updated_at"])
                obs = m.Observation(unhealthy=problem)
            elif t.written and t.state not in m.FINAL_DEVICE_STATES:
                obs = observe.observe(
                    docs.get(t.device_id), rollout_id, ref, r["base_generation"],
                    r["generation"], verdicts.get(t.device_id, ()),
                )  # fmt: skip
            targets.append(replace(t, observation=obs))
        decision = m.step(before, targets, plan, now)
        rs.save_targets(store, rollout_id, decision.targets, decision.changed)
        by_id = {t.device_id: t for t in decision.targets}
        rs.forget_verdicts(
            store,
            rollout_id,
            [d for d in decision.changed if by_id[d].state in m.FINAL_DEVICE_STATES],
        )
        after = replace(before, status=decision.status, reason=decision.reason)
        if after != before:
            rs.set_status(store, row, after)
        phases_changed = decision.phases != plan
        if phases_changed:
            rs.save_phases(store, rollout_id, decision.phases)
        if decision.start_phase is not None:
            written = rs.write_phase(store, row, decision.start_phase)
            out.publish += written
            out.desired_changed += written
        if decision.status == m.DONE and before.status != m.DONE:
            out.desired_changed += rs.complete(store, row)
        if decision.changed or after != before or phases_changed:
            out.notices.append(("progress", rs.describe(store, rollout_id, devices=False)))


def tick(store: Store, now: float | None = None) -> TickResult:
    """Evaluate every active rollout; ``now`` (epoch seconds) is the clock the bake times
    are measured by (the wall clock unless a test passes one)."""
    out = TickResult()
    active = rs.active_ids(store)
    out.active = len(active)
    for rollout_id in active:
        try:
            evaluate(store, rollout_id, out, now)
        except Exception:
            # Logged and retried next tick; the other rollouts go on.
            log.exception("rollout %s: evaluation failed", rollout_id)
    out.desired_changed = sorted(set(out.desired_changed))
    return out


def unacknowledged(store: Store) -> list[str]:
    """Written devices still Pending in an active rollout: their desired document is
    published again now and then, in case a write was lost (publishing is idempotent)."""
    return [
        r[0]
        for r in store.conn.execute(
            "SELECT t.device_id FROM rollout_targets t JOIN rollouts r ON r.id = t.rollout_id"
            " WHERE r.status IN (?, ?) AND t.written_at IS NOT NULL AND t.state = ?",
            (m.RUNNING, m.PAUSED, m.PENDING),
        )
    ]
