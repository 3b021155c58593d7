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
from hub.rollouts import observe, views
from hub.rollouts import service as rs
from hub.rollouts.observe import Verdict
from hub.store import Store

log = logging.getLogger(__name__)


@dataclass
class TickResult:
    publish: list[str] = field(default_factory=list)  # recompute these devices' desired docs
    desired_changed: list[str] = field(default_factory=list)
    notices: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (action, data)
    active: int = 0  # rollouts running or paused when the tick began


# What an observation was computed from: the document's text, the baseline and known
# generations, and the recorded verdicts.
MemoKey = tuple[str | None, int | None, int | None, tuple[Verdict, ...]]


@dataclass
class Memo:
    """Observations of the last tick, by (rollout, device) and what they were computed from.
    Reading a device's reported state cost more than anything else in a tick (a 10 000-device
    rollout with 5 000 devices updating took over a second a tick on a busy machine, holding
    the store's writer — and so ingest — that long); a device whose document, generations and
    verdicts did not change has the same observation, so only changed ones are parsed."""

    seen: dict[tuple[str, str], tuple[MemoKey, m.Observation]] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0


def evaluate(
    store: Store,
    rollout_id: str,
    out: TickResult,
    now: float | None = None,
    memo: Memo | None = None,
) -> None:
    now = time.time() if now is None else now
    memo = Memo() if memo is None else memo
    with store.tx():
        row = store.rollout_row(rollout_id)
        if row["status"] not in m.ACTIVE:
            return
        rows = store.rollout_target_rows(rollout_id)
        before = views.machine_rollout(row)
        plan = views.machine_phases(store.rollout_phase_rows(rollout_id))
        baking = m.watched_phases(plan, views.machine_targets(rows)) if before.bake > 0 else set()
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
        texts = store.reported_texts(live + watched)
        # Every deployment row of those devices, by generation (the newest row in the
        # report is a rollback target's once a rollback finished).
        verdicts = views.verdicts(store, rollout_id, live)
        ref = views.ref(row)
        targets = []
        for r, t in zip(rows, views.machine_targets(rows), strict=True):
            d = t.device_id
            if t.state == m.SUCCEEDED and t.phase in baking:
                doc = views.parse_doc(d, texts.get(d))
                t = replace(t, observation=m.Observation(
                    unhealthy=observe.bake_problem(doc, r["updated_at"])
                ))  # fmt: skip
            elif t.written and t.state not in m.FINAL_DEVICE_STATES:
                mine = tuple(sorted(verdicts.get(d, ()), key=lambda v: v.generation))
                key: MemoKey = (texts.get(d), r["base_generation"], r["generation"], mine)
                hit = memo.seen.get((rollout_id, d))
                if hit is not None and hit[0] == key:
                    obs = hit[1]
                    memo.hits += 1
                else:
                    obs = observe.observe(
                        views.parse_doc(d, texts.get(d)), rollout_id, ref, r["base_generation"],
                        r["generation"], mine,
                    )  # fmt: skip
                    memo.misses += 1
                memo.seen[(rollout_id, d)] = (key, obs)
                t = replace(t, observation=obs)
            targets.append(t)
        decision = m.step(before, targets, plan, now)
        rs.save_targets(store, rollout_id, decision.targets, decision.changed)
        by_id = {t.device_id: t for t in decision.targets}
        for d in decision.changed:  # final now: never observed again
            if by_id[d].state in m.FINAL_DEVICE_STATES:
                memo.seen.pop((rollout_id, d), None)
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
            out.notices.append(("progress", views.describe(store, rollout_id, devices=False)))


def tick(store: Store, now: float | None = None, memo: Memo | None = None) -> TickResult:
    """Evaluate every active rollout; ``now`` (epoch seconds) is the clock the bake times
    are measured by (the wall clock unless a test passes one); ``memo`` the observations of
    the previous tick (the controller keeps one)."""
    out = TickResult()
    active = views.active_ids(store)
    if memo is not None:  # rollouts no longer active are never observed again
        keep = set(active)
        memo.seen = {k: v for k, v in memo.seen.items() if k[0] in keep}
    out.active = len(active)
    for rollout_id in active:
        try:
            evaluate(store, rollout_id, out, now, memo)
        except Exception:
            # Logged and retried next tick; the other rollouts go on.
            log.exception("rollout %s: evaluation failed", rollout_id)
    out.desired_changed = sorted(set(out.desired_changed))
    return out


def unacknowledged(store: Store) -> list[str]:
    """Written devices still Pending in an active rollout: their desired document is
    published again now and then, in case a write was lost (publishing is idempotent).
    Deferred ones are left out: they acknowledged it, and their site holds it."""
    return [
        r[0]
        for r in store.conn.execute(
            "SELECT t.device_id FROM rollout_targets t JOIN rollouts r ON r.id = t.rollout_id"
            " WHERE r.status IN (?, ?) AND t.written_at IS NOT NULL AND t.state = ?"
            " AND substr(t.reason, 1, ?) != ?",
            (m.RUNNING, m.PAUSED, m.PENDING, len(m.DEFERRED), m.DEFERRED),
        )
    ]
