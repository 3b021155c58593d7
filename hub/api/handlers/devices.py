"""Device handlers: list (with the summary view), get, tags and decommissioning."""

from __future__ import annotations

import time
from typing import Any

from bundles.versions import bundle_name_error, version_error
from hub.api import summary as sv
from hub.api import validate as v
from hub.api.handlers.core import Caller, Change, Handler, Outcome, _tracking_desired, _via
from hub.errors import Invalid
from hub.store import Store
from protocol.api import MAX_LIST_IDS, MAX_SUMMARY_LIMIT, VIEWS


# --- devices -----------------------------------------------------------------------------
def _running_filter(value: str) -> str:
    """``NAME`` or ``NAME@VERSION``, checked like every bundle reference."""
    name, at, version = value.partition("@")
    reason = bundle_name_error(name)
    if reason is None and at:
        reason = version_error(version)
        if reason is not None:
            raise Invalid(f"running: version {version!r} {reason}", field="running")
    if reason is not None:
        raise Invalid(f"running: bundle name {name!r} {reason}", field="running")
    return value


def _ids_filter(value: list[Any]) -> list[str]:
    """``ids``: up to MAX_LIST_IDS device ids; a bad one is named by its position."""
    if len(value) > MAX_LIST_IDS:
        raise Invalid(f"ids: at most {MAX_LIST_IDS} device ids per call", field="ids")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise Invalid(f"ids[{i}] must be a string", field=f"ids[{i}]")
        v.device_id(item, f"ids[{i}]")
    return sorted(set(value))


def devices_list(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    for f in ("tag", "group"):
        if f in body:
            v.name(body[f], f)
    cursor = body.get("cursor")
    if cursor is not None:
        v.device_id(cursor, "cursor")
    view = body.get("view")
    if view is not None and view not in VIEWS:
        raise Invalid(f"view must be one of {', '.join(VIEWS)}", field="view")
    limit = v.limit(body)
    if view == "summary" and limit > MAX_SUMMARY_LIMIT:
        raise Invalid(f"limit must be 1-{MAX_SUMMARY_LIMIT} with view summary", field="limit")
    running = body.get("running")
    want = _running_filter(running) if running is not None else None
    ids = _ids_filter(body["ids"]) if "ids" in body else None
    items, nxt = store.list_devices(
        tag=body.get("tag"),
        group=body.get("group"),
        status=body.get("status"),
        text=body.get("text"),
        ids=ids,
        include_decommissioned=bool(body.get("include_decommissioned", False)),
        limit=limit,
        after=cursor,
        running=None if want is None else (lambda doc: sv.runs(doc, want)),
    )
    if view == "summary":
        _summarize(store, items)
    return Outcome({"items": items, "next_cursor": nxt})


def _summarize(store: Store, items: list[dict[str, Any]]) -> None:
    """Add the summary view's fields to one page of devices: a handful of queries for the
    whole page (desired, reported, rollouts, metrics), never one per device."""
    ids = [d["id"] for d in items]
    if not ids:
        return
    desired = store.resolve_desired(ids)
    reported = store.reported_states(ids)
    rollouts = store.active_rollout_targets(ids)
    metered = store.usage_of(ids)  # bytes used vs budget (metered links)
    start, end = sv.spark_window(time.time())
    buckets, last = store.metric_window(ids, list(sv.SUMMARY_METRICS), start, end, sv.SPARK_SECONDS)
    metrics = sv.sparks(buckets, last)
    for d in items:
        state = reported.get(d["id"])
        d["desired"] = _via(desired.get(d["id"]))
        d["running"] = sv.running_ref(state)
        d["deployment"] = sv.deployment(state)
        d["containers"] = sv.containers(state)
        d["gate"] = sv.gate(state)
        d["metered"] = metered.get(d["id"])
        d["rollout"] = rollouts.get(d["id"])
        d["metrics"] = metrics.get(d["id"])


def devices_get(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    device_id = v.device_id(body["id"])
    device = store.get_device(device_id)
    device["desired"] = _via(store.resolve_desired([device_id]).get(device_id))
    device["reported"] = store.get_reported(device_id)
    reported = device["reported"]
    device["gate"] = sv.gate(reported.get("state") if isinstance(reported, dict) else None)
    # What the hub sends the device about gating its updates (hub.gates).
    member = store.memberships([device_id])
    device["maintenance_windows"] = store.windows_of(member).get(device_id) if member else None
    device["variables"], device["secrets"] = _device_values(store, member)
    # Metered link: the budget the hub sends (device's own, else its groups'), and what the
    # device says it runs under and used in the last 24 h (its latest full heartbeat).
    hub_budget = store.budgets_of(member).get(device_id) if member else None
    used = store.usage_of([device_id]).get(device_id)
    device["metered"] = None if hub_budget is None and used is None else {
        "budget_set": hub_budget, **(used or {"budget": None, "bytes_day": None, "over": False})
    }  # fmt: skip
    device["last_applied_seq"] = store.last_applied_seq(device_id)
    # Sync view: the latest heartbeat (with its own "as of") and the generation of the
    # desired document last written to KV (what the device should report back).
    device["heartbeat"] = hb = store.get_heartbeat(device_id)
    # How many outbox rows the device had at its last heartbeat that the hub has not applied
    # yet. Only as fresh as that heartbeat (rows written since are not counted), so it carries
    # the heartbeat's time: a count without its "as of" would read as the state now.
    sent = hb["state"].get("last_seq") if hb else None
    known = isinstance(sent, int)
    device["sync_behind"] = max(0, sent - device["last_applied_seq"]) if known else None
    device["sync_behind_as_of"] = hb["as_of"] if hb is not None and known else None
    published = store.desired_published([device_id]).get(device_id)
    device["desired_generation"] = None if published is None else published["generation"]
    return Outcome(device)


def _device_values(
    store: Store, member: list[Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The variables and secrets that reach the device (hub.variables), each with its source
    and the sources it shadows; a secret shows its fingerprint, never its value."""
    if not member:
        return [], []
    found_vars, found_secrets = store.variables_of(member)[member[0].device_id]
    as_list = [
        [
            {"name": n, ("value" if kind == "var" else "fingerprint"): r.value,
             "source": r.source, "shadows": list(r.shadowed)}
            for n, r in sorted(found.items())
        ]
        for kind, found in (("var", found_vars), ("secret", found_secrets))
    ]  # fmt: skip
    return as_list[0], as_list[1]


def _tagging(add: bool) -> Handler:
    def handler(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
        device_id, tag = v.device_id(body["id"]), v.name(body["tag"], "tag")
        op = store.tag_device if add else store.untag_device
        action = "tagged" if add else "untagged"

        def write() -> bool:
            # The event goes in the same transaction, ahead of any desired.changed it causes.
            done = op(device_id, tag)
            if done:
                store.add_event(device_id, action, tag, {"tag": tag})
            return done

        changed, changes = _tracking_desired(store, [device_id], write)
        if changed:
            changes.insert(0, Change("devices", action, {"id": device_id, "tag": tag}))
        return Outcome({"id": device_id, "tag": tag, "changed": changed}, changes)

    return handler


def devices_decommission(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    device_id = v.device_id(body["id"])

    def write() -> bool:
        done = store.decommission_device(device_id)
        if done:
            store.add_event(device_id, "decommissioned", "decommissioned by an operator")
            # A retired device's own variables and secrets, and the key its secrets were
            # sealed to, go with it: a re-enrollment starts from the fleet's and groups'.
            store.drop_variables("device", device_id)
            store.set_seal_key(device_id, None)
        return done

    changed, changes = _tracking_desired(store, [device_id], write)
    if changed:
        changes.insert(0, Change("devices", "decommissioned", {"id": device_id}))
    return Outcome({"id": device_id, "changed": changed}, changes)
