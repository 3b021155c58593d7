"""Update-gate handlers: maintenance windows, metered-link budgets and forced updates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bundles.windows import MAX_WINDOWS, WindowError, parse_window
from hub.api import validate as v
from hub.api.handlers.core import Caller, Outcome, _devices_for_target, stale
from hub.api.handlers.devices import _ids_filter
from hub.errors import Invalid, NotFound
from hub.store import Store
from protocol.metered import BudgetError, format_budget, parse_budget


# --- update gates (maintenance windows, overrides through locks and windows) -------------
# maintenance.set validates every window with the grammar the agent uses (bundles.windows),
# naming the window and the part at fault. devices.force_update wants ``confirm`` equal to
# the number of devices: the counted confirmation is the hub's rule, so no client skips it.
def _gate_target(body: dict[str, Any], what: str) -> tuple[str, str]:
    kind, target = v.target(body["target"])
    if kind == "tag":
        raise Invalid(f"target must be device:ID or group:NAME ({what} are not set per tag)",
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


def _set_for_target(
    store: Store,
    caller: Caller,
    kind: str,
    target: str,
    field: str,
    value: Any,
    set_: Callable[[], bool],
    event: str,
    shown: str,
) -> Outcome:
    """Store a per-device or per-group setting that lives in the desired document, and tell
    each device whose document it changes (an event; the writer re-resolves the documents)."""
    with store.tx():
        _exists(store, kind, target)
        changed = set_()
        devices = _devices_for_target(store, kind, target) if changed else []
        for d in devices:
            store.add_event(
                d,
                event,
                shown,
                {"target": f"{kind}:{target}", field: value, "by": caller.name},
            )
    return Outcome(
        {"target": f"{kind}:{target}", field: value, "changed": changed,
         "devices": sorted(devices)},
        stale(devices),
    )  # fmt: skip


def maintenance_set(store: Store, body: dict[str, Any], caller: Caller) -> Outcome:
    kind, target = _gate_target(body, "windows")
    clear = bool(body.get("clear", False))
    if clear == ("windows" in body):
        raise Invalid("give either windows (a list; [] for any time) or clear: true",
                      field="windows")  # fmt: skip
    windows = None if clear else _windows(body["windows"])
    return _set_for_target(
        store, caller, kind, target, "windows", windows,
        lambda: store.set_windows(kind, target, windows, caller.name),
        "maintenance.changed",
        f"maintenance windows of {kind} {target}: "
        + ("inherited" if windows is None else ", ".join(windows) or "any time"),
    )  # fmt: skip


def maintenance_list(store: Store, _body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"items": store.list_windows()})


# --- metered links: a data budget per device or group, in the desired document -----------
def metered_set(store: Store, body: dict[str, Any], caller: Caller) -> Outcome:
    kind, target = _gate_target(body, "budgets")
    clear = bool(body.get("clear", False))
    if clear == ("budget" in body):
        raise Invalid("give either budget (like '100KB/day') or clear: true", field="budget")
    budget: int | None = None
    if not clear:
        try:
            budget = parse_budget(body["budget"])
        except BudgetError as exc:
            raise Invalid(f"budget: {exc.message}", field="budget") from None
    return _set_for_target(
        store, caller, kind, target, "budget", budget,
        lambda: store.set_budget(kind, target, budget, caller.name),
        "metered.changed",
        f"data budget of {kind} {target}: "
        + ("inherited" if budget is None else format_budget(budget)),
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
    return Outcome({"items": out}, stale(ids))
