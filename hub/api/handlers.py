"""One function per API verb: validated body in, result and change notices out.

Handlers are synchronous store calls; the service runs them on the store's single worker
thread. They never touch NATS: what changed is returned as ``Change`` values and the service
publishes them on ``sb.fleet.changes.<kind>`` after the transaction committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bundles.hashing import content_hash
from bundles.validate import from_dict
from bundles.variables import MAX_VALUE_LEN, NAME_RE, references
from bundles.versions import bundle_name_error, parse_ref, version_error
from bundles.windows import MAX_WINDOWS, WindowError, parse_window
from hub import __version__
from hub.api import dryrun
from hub.api import summary as sv
from hub.api import validate as v
from hub.desired import Assignment
from hub.errors import Invalid, NotFound
from hub.store import Store
from protocol.api import MAX_LIST_IDS, MAX_SUMMARY_LIMIT, RESOLUTIONS, ROLES, VIEWS
from protocol.metered import BudgetError, format_budget, parse_budget

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


def _tracking_desired(
    store: Store, affected: list[str] | None, write: Callable[[], T]
) -> tuple[T, list[Change]]:
    """Run ``write`` in one transaction and record which devices' desired bundle it changed.

    The sync issue publishes desired documents for the devices named in the ``desired``
    change notice (or re-resolves them itself).
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
    changes = [Change("desired", "changed", {"devices": changed})] if changed else []
    return out, changes


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


# --- groups ------------------------------------------------------------------------------
def groups_create(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    group = store.create_group(v.name(body["name"], "name"), body.get("description", ""))
    return Outcome(group, [Change("groups", "created", {"name": group["name"]})])


def groups_delete(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    name = v.name(body["name"], "name")
    with store.tx():
        members = store.delete_group(name)
        # Its variables and secrets go with it (a new group of the same name starts empty).
        store.drop_variables("group", name)
        # Each former member's own log says why its groups changed.
        for device_id in members:
            store.add_event(device_id, "member_removed", name, {"group": name, "reason": "deleted"})
    result = {"name": name, "deleted": True, "members": members}
    changes = [Change("groups", "deleted", {"name": name, "members": members})]
    if members:
        # The group's variables, secrets and windows no longer reach them: re-resolved, put
        # only where a document differs.
        changes.append(Change("desired", "changed", {"devices": sorted(members)}))
    return Outcome(result, changes)


def _membership(add: bool) -> Handler:
    def handler(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
        name, device_id = v.name(body["name"], "name"), v.device_id(body["device"], "device")
        op = store.add_to_group if add else store.remove_from_group
        action = "member_added" if add else "member_removed"

        def write() -> bool:
            done = op(name, device_id)
            if done:
                store.add_event(device_id, action, name, {"group": name})
            return done

        changed, changes = _tracking_desired(store, [device_id], write)
        if changed:
            if not changes:
                # Same bundle, but the group's variables, secrets or maintenance windows may
                # now reach it (or no longer): the writer re-resolves its document and puts
                # it only if it differs.
                changes.append(Change("desired", "changed", {"devices": [device_id]}))
            changes.insert(0, Change("groups", action, {"name": name, "device": device_id}))
        return Outcome({"name": name, "device": device_id, "changed": changed}, changes)

    return handler


def groups_list(store: Store, _body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"items": store.list_groups()})


# --- bundles -----------------------------------------------------------------------------
def bundles_push(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    spec = from_dict(body["spec"])  # raises BundleInvalid with every problem
    digest = content_hash(spec)
    signatures = body.get("signatures") or []
    with store.tx():
        created = store.put_bundle_version(
            spec.bundle, spec.version, spec.to_dict(), digest, spec.description
        )
        signed = [store.put_bundle_signature(spec.bundle, spec.version, s) for s in signatures]
    result = {
        "bundle": spec.bundle,
        "version": spec.version,
        "content_hash": digest,
        "created": created,
        "signatures": len(store.bundle_signatures(spec.bundle, spec.version)),
    }
    unset = _unset_references(store, spec.to_dict())
    if unset:
        result["unset"] = unset
    changes = [Change("bundles", "pushed", dict(result))] if created else []
    if any(signed) and not created:
        # A new signature of a version devices may already be told to run: their documents
        # change (the signing change republishes every document that differs).
        changes.append(Change("signing", "signed", {"bundle": spec.ref}))
    return Outcome(result, changes)


def _unset_references(store: Store, spec: dict[str, Any]) -> list[str]:
    """The spec's references that no fleet, group or device sets yet (a warning: values may
    be set after the push, but a device without one refuses the version, naming it)."""
    if not references(spec):
        return []
    known = {(k, n) for k, n in store.conn.execute("SELECT DISTINCT kind, name FROM variables")}
    out = []
    for i, c in enumerate(spec.get("containers") or ()):
        for key, value in sorted((c.get("env") or {}).items()):
            refs = references({"containers": [{"env": {key: value}}]})
            for kind, names in (("var", refs.variables), ("secret", refs.secrets)):
                out += [
                    f"containers[{i}].env.{key}: {'variable' if kind == 'var' else 'secret'} "
                    f"{n} is set for no fleet, group or device yet"
                    for n in sorted(names)
                    if (kind, n) not in known
                ]
    return out


def bundles_sign(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    """Add a signature to a stored version: how a key rotation re-signs what devices run."""
    name, version = body["name"], body["version"]
    added = store.put_bundle_signature(name, version, body["signature"])
    result = {
        "bundle": name,
        "version": version,
        "added": added,
        "signatures": len(store.bundle_signatures(name, version)),
    }
    changes = [Change("signing", "signed", {"bundle": f"{name}@{version}"})] if added else []
    return Outcome(result, changes)


def trust_get(store: Store, _body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"trust": store.trust_set(), "chain": store.trust_chain()})


def trust_push(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    doc = store.put_trust_set(body["trust"], force=bool(body.get("force")))
    return Outcome({"trust": doc}, [Change("signing", "trust", {"serial": doc["serial"]})])


def bundles_list(store: Store, _body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"items": store.list_bundles()})


def bundles_get(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome(store.get_bundle_version(body["name"], body.get("version")))


def bundles_versions(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"name": body["name"], "items": store.bundle_versions(body["name"])})


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


# --- events and metrics ------------------------------------------------------------------
def events_list(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    device = body.get("device")
    if device is not None:
        v.device_id(device, "device")
    before = None
    if "cursor" in body:
        if not body["cursor"].isdigit():
            raise Invalid("cursor must be a cursor returned by events.list", field="cursor")
        before = int(body["cursor"])
    items, nxt = store.list_events(device=device, limit=v.limit(body), before=before)
    return Outcome({"items": items, "next_cursor": nxt})


def metrics_get(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    device = v.device_id(body["device"], "device")
    resolution = body.get("resolution", "1m")
    if resolution not in RESOLUTIONS:
        raise Invalid(f"resolution must be one of {', '.join(RESOLUTIONS)}", field="resolution")
    store.get_device(device)
    items = store.get_metrics(
        device, resolution, body.get("since"), body.get("until"), body.get("name")
    )
    return Outcome({"device": device, "resolution": resolution, "items": items})


# --- enrollment tokens and API keys ------------------------------------------------------
def tokens_create(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    tenant = v.name(body["tenant"], "tenant")
    expires_in = v.int_range(body, "expires_in", 60, 365 * DAY, DAY)
    max_uses = v.int_range(body, "max_uses", 1, 1_000_000, 1)
    # The token is the requester's (protocol.api SECRET_VERBS); the reply holds none.
    record, _secret = store.create_enrollment_token(tenant, expires_in, max_uses, body["token"])
    return Outcome(record, [Change("tokens", "created", record)])


def tokens_list(store: Store, _body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"items": store.list_enrollment_tokens()})


def tokens_revoke(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    record = store.revoke_enrollment_token(body["id"])
    return Outcome(record, [Change("tokens", "revoked", {"id": record["id"]})])


def keys_create(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    role = body.get("role", "readonly")
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}", field="role")
    if not body["name"].strip():
        raise Invalid("name must not be empty", field="name")
    # The key is the requester's (protocol.api SECRET_VERBS); the reply holds none.
    record, _secret = store.create_api_key(body["name"], role, body["key"])
    return Outcome(record, [Change("keys", "created", record)])


def keys_list(store: Store, _body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"items": store.list_api_keys()})


def keys_revoke(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    record = store.revoke_api_key(body["id"])
    return Outcome(record, [Change("keys", "revoked", {"id": record["id"]})])


def session_whoami(_store: Store, _body: dict[str, Any], caller: Caller) -> Outcome:
    return Outcome(
        {
            "key_id": caller.key_id,
            "name": caller.name,
            "role": caller.role,
            "hub_version": __version__,
        }
    )


# --- update gates (maintenance windows, overrides through locks and windows) -------------
# maintenance.set validates every window with the grammar the agent uses (bundles.windows),
# naming the window and the part at fault. devices.force_update wants ``confirm`` equal to
# the number of devices: the counted confirmation is the hub's rule, so no client skips it.
def _gate_target(body: dict[str, Any]) -> tuple[str, str]:
    kind, target = v.target(body["target"])
    if kind == "tag":
        raise Invalid("target must be device:ID or group:NAME (windows are not set per tag)",
                      field="target")  # fmt: skip
    return kind, target


def _windows(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise Invalid("windows must be a list of windows like 'Sat,Sun 02:00-05:00'",
                      field="windows")  # fmt: skip
    if len(value) > MAX_WINDOWS:
        raise Invalid(f"windows: at most {MAX_WINDOWS}", field="windows")
    out = []
    for i, text in enumerate(value):
        try:
            w = parse_window(text)
        except WindowError as exc:
            raise Invalid(f"windows[{i}]: {exc.field}: {exc.message} (in {text!r})",
                          field=f"windows[{i}].{exc.field}") from None  # fmt: skip
        out.append(w.text)
    return out


def _exists(store: Store, kind: str, target: str) -> None:
    if kind == "device":
        store.get_device(target)  # raises NotFound
    else:
        store.get_group(target)


def maintenance_set(store: Store, body: dict[str, Any], caller: Caller) -> Outcome:
    kind, target = _gate_target(body)
    clear = bool(body.get("clear", False))
    if clear == ("windows" in body):
        raise Invalid("give either windows (a list; [] for any time) or clear: true",
                      field="windows")  # fmt: skip
    windows = None if clear else _windows(body["windows"])
    with store.tx():
        _exists(store, kind, target)
        changed = store.set_windows(kind, target, windows, caller.name)
        devices = _devices_for_target(store, kind, target) if changed else []
        for d in devices:
            store.add_event(
                d,
                "maintenance.changed",
                f"maintenance windows of {kind} {target}: "
                + ("inherited" if windows is None else ", ".join(windows) or "any time"),
                {"target": f"{kind}:{target}", "windows": windows, "by": caller.name},
            )
    changes = [Change("desired", "changed", {"devices": sorted(devices)})] if devices else []
    return Outcome(
        {"target": f"{kind}:{target}", "windows": windows, "changed": changed,
         "devices": sorted(devices)},
        changes,
    )  # fmt: skip


def maintenance_list(store: Store, _body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"items": store.list_windows()})


# --- metered links: a data budget per device or group, in the desired document -----------
def metered_set(store: Store, body: dict[str, Any], caller: Caller) -> Outcome:
    kind, target = v.target(body["target"])
    if kind == "tag":
        raise Invalid("target must be device:ID or group:NAME (budgets are not set per tag)",
                      field="target")  # fmt: skip
    clear = bool(body.get("clear", False))
    if clear == ("budget" in body):
        raise Invalid("give either budget (like '100KB/day') or clear: true", field="budget")
    budget: int | None = None
    if not clear:
        try:
            budget = parse_budget(body["budget"])
        except BudgetError as exc:
            raise Invalid(f"budget: {exc.message}", field="budget") from None
    with store.tx():
        _exists(store, kind, target)
        changed = store.set_budget(kind, target, budget, caller.name)
        devices = _devices_for_target(store, kind, target) if changed else []
        for d in devices:
            store.add_event(
                d,
                "metered.changed",
                f"data budget of {kind} {target}: "
                + ("inherited" if budget is None else format_budget(budget)),
                {"target": f"{kind}:{target}", "budget": budget, "by": caller.name},
            )
    changes = [Change("desired", "changed", {"devices": sorted(devices)})] if devices else []
    return Outcome(
        {"target": f"{kind}:{target}", "budget": budget, "changed": changed,
         "devices": sorted(devices)},
        changes,
    )  # fmt: skip


def metered_list(store: Store, _body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"items": store.list_budgets()})


def devices_force_update(store: Store, body: dict[str, Any], caller: Caller) -> Outcome:
    ids = _ids_filter(body["ids"])
    if not ids:
        raise Invalid("ids: name at least one device", field="ids")
    confirm = body["confirm"]
    if confirm != len(ids):
        raise Invalid(
            f"confirm must be the number of devices ({len(ids)}): an override starts an update "
            "through their update locks and maintenance windows",
            field="confirm",
        )
    resolved = store.resolve_desired(ids)
    missing = [d for d in ids if d not in resolved]
    if missing:
        raise NotFound(f"no device {missing[0]!r}", field="ids")
    nothing = [d for d in ids if resolved[d] is None]
    if nothing:
        raise Invalid(f"{nothing[0]} has no bundle assigned: nothing to force", field="ids")
    out = []
    with store.tx():
        for d in ids:
            a = resolved[d]
            assert a is not None
            store.set_override(d, a.ref, caller.name)
            store.add_event(
                d,
                "update.forced",
                f"{a.ref} forced through update locks and maintenance windows by {caller.name}",
                {"bundle_ref": a.ref, "by": caller.name},
                severity="warning",
            )
            out.append({"id": d, "bundle_ref": a.ref})
    return Outcome({"items": out}, [Change("desired", "changed", {"devices": ids})])


# --- variables and secrets (hub.variables; docs/bundles.md "Variables and secrets") ---------
# A secret's value arrives in the request body and leaves the handler only encrypted (the
# store) or sealed to a device (the desired writer); no reply, event, change notice or error
# message carries it. The affected devices' desired documents are re-sent: a device whose
# bundle refers to the name gets the new value (a rotation recreates its containers).
def _scope(store: Store, body: dict[str, Any]) -> tuple[str, str]:
    scope = body["scope"]
    if scope not in ("fleet", "group", "device"):
        raise Invalid("scope must be fleet, group or device", field="scope")
    target = body.get("target") or ""
    if scope == "fleet":
        if target:
            raise Invalid("a fleet setting has no target", field="target")
        return scope, ""
    target = v.device_id(target, "target") if scope == "device" else v.name(target, "target")
    _exists(store, scope, target)
    return scope, target


def _var_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise Invalid(
            "name must be 1-128 letters, digits and '_', not starting with a digit", field="name"
        )
    return value


def _setting(kind: str, unset: bool) -> Handler:
    noun = "variable" if kind == "var" else "secret"

    def handler(store: Store, body: dict[str, Any], caller: Caller) -> Outcome:
        name = _var_name(body["name"])
        with store.tx():
            scope, target = _scope(store, body)
            if unset:
                changed = store.unset_variable(kind, scope, target, name)
            else:
                value = body.get("value")
                if not isinstance(value, str) or len(value) > MAX_VALUE_LEN or "\x00" in value:
                    raise Invalid(
                        f"value must be a string of at most {MAX_VALUE_LEN} characters, no NUL",
                        field="value",
                    )  # never quoted: it may be a secret
                changed = store.set_variable(kind, scope, target, name, value, caller.name)
            devices = store.devices_using(kind, scope, target) if changed else []
        where = "fleet" if scope == "fleet" else f"{scope}:{target}"
        if changed:
            log.info("%s %s %s at %s by %s", noun, name, "unset" if unset else "set", where,
                     caller.name)  # fmt: skip
        changes = [Change("desired", "changed", {"devices": sorted(devices)})] if devices else []
        return Outcome(
            {"kind": noun, "name": name, "scope": scope, "target": target or None,
             "changed": changed, "devices": len(devices)},
            changes,
        )  # fmt: skip

    return handler


def _settings_list(kind: str) -> Handler:
    def handler(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
        scope, target = None, None
        if body.get("scope"):
            scope, target = _scope(store, body)
        return Outcome({"items": store.list_variables(kind, scope, target)})

    return handler


HANDLERS: dict[str, Handler] = {
    "devices.list": devices_list,
    "devices.get": devices_get,
    "devices.tag": _tagging(True),
    "devices.untag": _tagging(False),
    "devices.decommission": devices_decommission,
    "groups.create": groups_create,
    "groups.delete": groups_delete,
    "groups.add": _membership(True),
    "groups.remove": _membership(False),
    "groups.list": groups_list,
    "bundles.push": bundles_push,
    "bundles.sign": bundles_sign,
    "trust.get": trust_get,
    "trust.push": trust_push,
    "bundles.list": bundles_list,
    "bundles.get": bundles_get,
    "bundles.versions": bundles_versions,
    "assign": assign,
    "unassign": unassign,
    "assignments.list": assignments_list,
    "events.list": events_list,
    "metrics.get": metrics_get,
    "tokens.create": tokens_create,
    "tokens.list": tokens_list,
    "tokens.revoke": tokens_revoke,
    "keys.create": keys_create,
    "keys.list": keys_list,
    "keys.revoke": keys_revoke,
    "session.whoami": session_whoami,
    "maintenance.set": maintenance_set,
    "maintenance.list": maintenance_list,
    "metered.set": metered_set,
    "metered.list": metered_list,
    "devices.force_update": devices_force_update,
    "vars.set": _setting("var", False),
    "vars.unset": _setting("var", True),
    "vars.list": _settings_list("var"),
    "secrets.set": _setting("secret", False),
    "secrets.unset": _setting("secret", True),
    "secrets.list": _settings_list("secret"),
}
