"""Read-only handlers for a device's events and metrics."""

from __future__ import annotations

from typing import Any

from hub.api import validate as v
from hub.api.handlers.core import Caller, Outcome
from hub.errors import Invalid
from hub.store import Store
from protocol.api import RESOLUTIONS


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
