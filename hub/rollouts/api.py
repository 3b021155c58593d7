"""The ``rollouts.*`` operator API verbs (declared in ``protocol.api.REQUESTS``).

Handlers run on the store's writer thread like every other verb. ``start`` only records the
rollout; the controller writes the first phase on its next tick (it is woken by the
``rollouts`` change notice), so the answer comes back at once with every device Pending.
"""

from __future__ import annotations

from typing import Any

from bundles.versions import parse_ref
from hub.api import dryrun
from hub.api import validate as v
from hub.api.handlers import Caller, Change, Handler, Outcome, stale
from hub.errors import Conflict, Invalid
from hub.rollouts import machine as m
from hub.rollouts import service as rs
from hub.rollouts import views
from hub.store import Store
from protocol.api import ROLLOUT_STATES
from sbutil.duration import DURATION_HELP, parse_duration

KIND = "rollouts"  # change notices on sb.fleet.changes.rollouts, as the TUI listens
MAX_CANARY = 100
MAX_BAKE = 7 * 86400.0  # a week: longer is a typo, or a rollout nobody should wait on


def _id(body: dict[str, Any]) -> str:
    value = str(body["id"])
    if not value or len(value) > 64:
        raise Invalid("id must be a rollout id such as ro-1a2b3c4d", field="id")
    return value


def _notice(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in ("id", "bundle", "version", "target", "state", "counts")}


def _steps(body: dict[str, Any]) -> tuple[m.Share, ...] | None:
    """``phases`` (``"1%,10%,50%,100%"``), or None for the canary (and rest) form."""
    if "phases" not in body:
        return None
    if "canary_percent" in body:
        raise Invalid("give phases or canary_percent, not both", field="phases")
    try:
        return m.parse_phases(body["phases"])
    except m.SpecError as exc:
        raise Invalid(str(exc), field="phases") from exc


def _limit(body: dict[str, Any]) -> m.Share:
    value = body.get("max_failures", 0)
    try:
        limit = m.parse_share(value, "max_failures")
    except m.SpecError as exc:
        raise Invalid(str(exc), field="max_failures") from exc
    if limit.count is not None and limit.count > 1_000_000:
        raise Invalid("max_failures must be 0-1000000 or a percentage", field="max_failures")
    return limit


def _bake(body: dict[str, Any]) -> float:
    try:
        bake = parse_duration(body.get("bake", 0), allow_zero=True)
    except ValueError as exc:
        raise Invalid(f"bake: {exc}", field="bake") from exc
    if bake > MAX_BAKE:
        raise Invalid(f"bake must be at most 7d ({DURATION_HELP})", field="bake")
    return bake


def start(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    kind, target = v.target(body["target"])
    bundle, version = parse_ref(body["bundle"], field="bundle")
    canary = v.int_range(body, "canary_percent", 0, MAX_CANARY, 0)
    steps = _steps(body)
    limit = _limit(body)
    bake = _bake(body)
    if not body.get("force"):
        store.check_runnable(bundle, version)

    def create() -> str:
        return rs.create(store, kind, target, bundle, version, canary, limit, steps, bake)

    if body.get("dry_run"):

        def rehearsal() -> list[str]:
            return [t["device_id"] for t in store.rollout_target_rows(create())]

        with dryrun.quiet(rs.log):  # it would log the rollout as started
            return Outcome(dryrun.result(dryrun.rehearse(store, rehearsal)))
    rollout_id = create()
    out = views.describe(store, rollout_id)
    return Outcome(out, [Change(KIND, "started", _notice(out))])


def list_(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    state = body.get("state")
    if state is not None and state not in ROLLOUT_STATES:
        raise Invalid(f"state must be one of {', '.join(ROLLOUT_STATES)}", field="state")
    before = None
    if "cursor" in body:
        if not body["cursor"].isdigit():
            raise Invalid("cursor must be a cursor returned by rollouts.list", field="cursor")
        before = int(body["cursor"])
    items, nxt = views.list_rollouts(store, state, v.limit(body), before)
    return Outcome({"items": items, "next_cursor": nxt})


def get(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    limit = v.int_range(body, "limit", 1, views.MAX_DEVICES_PAGE, views.MAX_DEVICES_PAGE)
    cursor = body.get("cursor")
    if cursor is not None:
        v.device_id(cursor, "cursor")
    return Outcome(views.describe(store, _id(body), limit=limit, after=cursor))


def _action(name: str) -> Handler:
    def handler(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
        rollout_id = _id(body)
        with store.tx():
            row = store.rollout_row(rollout_id)
            current = views.machine_rollout(row)
            try:
                if name == "pause":
                    new = m.pause(current)
                elif name == "resume":
                    targets = views.machine_targets(store.rollout_target_rows(rollout_id))
                    new = m.resume(current, targets)
                    plan = views.machine_phases(store.rollout_phase_rows(rollout_id))
                    rs.save_phases(store, rollout_id, m.resume_phases(plan, targets))
                else:
                    new = m.abort(current)
            except m.TransitionError as exc:
                raise Conflict(str(exc), field="id") from exc
            rs.set_status(store, row, new)
            restored = rs.restore(store, row) if name == "abort" else []
        out = views.describe(store, rollout_id)
        action = {"pause": "paused", "resume": "resumed", "abort": "aborted"}[name]
        notice = _notice(out)
        if name == "abort":
            # The controller publishes the restored devices' desired documents on this.
            notice["restored"] = restored
            out["restored"] = restored
        return Outcome(out, [Change(KIND, action, notice), *stale(restored)])

    return handler


VERBS: dict[str, Handler] = {
    "rollouts.start": start,
    "rollouts.list": list_,
    "rollouts.get": get,
    "rollouts.pause": _action("pause"),
    "rollouts.resume": _action("resume"),
    "rollouts.abort": _action("abort"),
}
