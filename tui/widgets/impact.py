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


async def devices_touched(widget: Any, verb: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """``{"devices": N, "sample": [...], "more"?: bool}``, or None when nobody can tell."""
    session = hub_app(widget).session
    try:
        result = await session.call(verb, {**body, "dry_run": True})
    except ApiError as exc:
        if exc.code != codes.INVALID or exc.field != "dry_run":
            return None  # the real request will fail the same way and say why
        return await count_target(widget, str(body.get("target", "")))
    return result if isinstance(result.get("devices"), int) else None


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
