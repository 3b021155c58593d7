"""Variable and secret handlers: set, unset and list at fleet, group or device scope."""

from __future__ import annotations

import logging
from typing import Any

from bundles.variables import MAX_VALUE_LEN, NAME_RE
from hub.api import validate as v
from hub.api.handlers.core import Caller, Handler, Outcome, stale
from hub.api.handlers.gates import _exists
from hub.errors import Invalid
from hub.store import Store

log = logging.getLogger(__name__)


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
        return Outcome(
            {"kind": noun, "name": name, "scope": scope, "target": target or None,
             "changed": changed, "devices": len(devices)},
            stale(devices),
        )  # fmt: skip

    return handler


def _settings_list(kind: str) -> Handler:
    def handler(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
        scope, target = None, None
        if body.get("scope"):
            scope, target = _scope(store, body)
        return Outcome({"items": store.list_variables(kind, scope, target)})

    return handler
