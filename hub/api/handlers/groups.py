"""Group handlers: create, delete, membership and the list."""

from __future__ import annotations

from typing import Any

from hub.api import validate as v
from hub.api.handlers.core import Caller, Change, Handler, Outcome, _tracking_desired, stale
from hub.store import Store


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
    # The group's variables, secrets, windows and budget no longer reach its former members:
    # their documents are re-resolved (and a notice follows only for the ones that differ).
    changes = [Change("groups", "deleted", {"name": name, "members": members}), *stale(members)]
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

        changed = _tracking_desired(store, [device_id], write)[0]
        changes: list[Change] = []
        if changed:
            # Whatever its bundle does, the group's variables, secrets, maintenance windows
            # and budget may now reach it (or no longer): its document is re-resolved, and
            # the desired notice follows only if the document differs.
            changes = [Change("groups", action, {"name": name, "device": device_id})]
            changes += stale([device_id])
        return Outcome({"name": name, "device": device_id, "changed": changed}, changes)

    return handler


def groups_list(store: Store, _body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"items": store.list_groups()})
