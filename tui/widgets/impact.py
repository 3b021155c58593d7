"""How many devices a fleet-wide write touches, for the confirmation that asks about it.

The hub answers ``assign`` / ``rollouts.start`` with ``"dry_run": true`` by counting the
devices without writing. A hub without dry runs refuses the field (``invalid``, field
``dry_run``); then the TUI counts the target itself with ``devices.list`` (the same
device > group > tag targets), so the question always carries a number.
"""

from __future__ import annotations

from typing import Any

from protocol import errors as codes
from tui.client import ApiError
from tui.widgets.base import hub_app

COUNT_LIMIT = 1000  # one devices.list page; past it the count reads "1000+"


async def devices_touched(
    widget: Any, verb: str, body: dict[str, Any]
) -> tuple[bool, dict[str, Any] | None]:
    """``(go_on, impact)``: impact is ``{"devices": N, "sample": [...], "more"?: bool}`` or
    None when nobody can tell. When the hub refuses the request itself (a target that selects
    no devices, an unknown version, no connection) the reason is shown now and ``go_on`` is
    False: a confirmation for a request that cannot succeed would only waste a keypress."""
    app = hub_app(widget)
    try:
        result = await app.session.call(verb, {**body, "dry_run": True})
    except ApiError as exc:
        if exc.code == codes.INVALID and exc.field == "dry_run":
            return True, await count_target(widget, str(body.get("target", "")))
        app.report_error(f"{verb}: {exc.code}", str(exc))
        return False, None
    return True, (result if isinstance(result.get("devices"), int) else None)


async def count_target(widget: Any, target: str) -> dict[str, Any] | None:
    """The devices a target names today, counted by the TUI (no dry run needed)."""
    kind, _, name = target.partition(":")
    if kind == "device":
        return {"devices": 1, "sample": [name]}
    if kind not in ("group", "tag"):
        return None
    try:
        page = await hub_app(widget).session.call(
            "devices.list", {kind: name, "limit": COUNT_LIMIT}
        )
    except ApiError:
        return None
    ids = [str(d.get("id")) for d in page.get("items", [])]
    return {"devices": len(ids), "sample": ids[:20], "more": bool(page.get("next_cursor"))}
