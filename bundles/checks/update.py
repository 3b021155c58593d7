"""The ``update`` section: the update strategy, the health window and the maintenance
windows (``bundles.windows`` grammar)."""

from __future__ import annotations

from typing import Any

from bundles.checks.base import BAD, Ctx, Field, kind_of, short
from bundles.checks.values import choice, duration, list_of
from bundles.source import PathParts
from bundles.windows import MAX_WINDOWS, WindowError, parse_window


def window(value: Any, path: PathParts, ctx: Ctx) -> Any:
    """One maintenance window (``bundles.windows`` grammar), kept as written."""
    if not isinstance(value, str):
        ctx.add(path, f"must be a string like 'Sat,Sun 02:00-05:00', got {kind_of(value)}")
        return BAD
    try:
        w = parse_window(value)
    except WindowError as exc:
        ctx.add(path, f"{exc.field}: {exc.message} (in {short(value)})")
        return BAD
    return w.text


UPDATE_FIELDS: dict[str, Field] = {
    "strategy": Field(choice("download-then-kill", "kill-then-download")),
    "health_window": Field(duration(positive=True)),
    "maintenance_windows": Field(list_of(window, MAX_WINDOWS)),
}
