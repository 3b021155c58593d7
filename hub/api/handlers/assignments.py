"""Assignment handlers: assign and unassign a bundle to a device, group or tag."""

from __future__ import annotations

from typing import Any

from bundles.versions import parse_ref
from hub.api import dryrun
from hub.api import validate as v
from hub.api.handlers.core import (
    Caller,
    Change,
    Outcome,
    _devices_for_target,
    _live,
    _tracking_desired,
)
from hub.desired import Assignment
from hub.store import Store


# --- assignments -------------------------------------------------------------------------
def _assignment_dict(a: Assignment) -> dict[str, Any]:
    return {
        "id": a.id,
        "target": f"{a.target_kind}:{a.target}",
        "bundle": a.bundle,
        "version": a.version,
        "created_at": a.created_at,
    }


def assign(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    kind, target = v.target(body["target"])
    bundle, version = parse_ref(body["bundle"], field="bundle")
    if not body.get("force"):
        store.check_runnable(bundle, version)
    if body.get("dry_run"):

        def rehearsal() -> list[str]:
            store.assign(kind, target, bundle, version)  # every check the real one makes
            return _live(store, _devices_for_target(store, kind, target))

        return Outcome(dryrun.result(dryrun.rehearse(store, rehearsal)))
    with store.tx():
        affected = _devices_for_target(store, kind, target)
        a, changes = _tracking_desired(
            store, affected, lambda: store.assign(kind, target, bundle, version)
        )
    result = _assignment_dict(a)
    result["desired_changed"] = changes[0].data["devices"] if changes else []
    return Outcome(result, [Change("assignments", "assigned", _assignment_dict(a)), *changes])


def unassign(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    kind, target = v.target(body["target"])
    with store.tx():
        affected = _devices_for_target(store, kind, target)
        a, changes = _tracking_desired(store, affected, lambda: store.unassign(kind, target))
    result = _assignment_dict(a)
    result["desired_changed"] = changes[0].data["devices"] if changes else []
    return Outcome(result, [Change("assignments", "unassigned", _assignment_dict(a)), *changes])


def assignments_list(store: Store, _body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"items": [_assignment_dict(a) for a in store.list_assignments()]})
