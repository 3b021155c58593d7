"""The bundle validator's machinery: the error collector every checker writes to, the
``BAD`` marker, field tables and the walker that checks a mapping against one.

A checker is ``(value, path, ctx) -> parsed value | BAD``: it records what is wrong in
``ctx`` and returns ``BAD``, so one pass collects every error of a document. Each section of
a bundle has its table and checker in a module of its own (``values``: the scalar rules;
``container``, ``healthcheck``, ``depends``, ``update``); ``bundles.validate`` puts them
together and is the public entry point.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from bundles.model import PortMapping
from bundles.source import PathParts

MAX_ERRORS = 200
MAX_CONTAINERS = 32


class _Bad:
    def __repr__(self) -> str:
        return "BAD"


BAD: Any = _Bad()


class Ctx:
    def __init__(self, allow_latest: bool) -> None:
        self.allow_latest = allow_latest
        self.errors: list[tuple[PathParts, str]] = []
        self.total = 0
        self.first_dropped: PathParts = ()  # where the "more errors" entry points
        # Host port bindings seen so far, for the bundle-wide clash check.
        self.bindings: list[tuple[PathParts, PortMapping]] = []
        # depends_on entries seen so far (entry path, service named), for the bundle-wide
        # checks: unknown services, a container depending on itself, cycles.
        self.depends: list[tuple[PathParts, str]] = []

    def add(self, path: PathParts, message: str) -> None:
        self.total += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append((path, message))
        elif self.total == MAX_ERRORS + 1:
            self.first_dropped = path


Check = Callable[[Any, PathParts, Ctx], Any]


class Field(NamedTuple):
    check: Check
    required: bool = False


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def short(value: Any) -> str:
    """The offending value as the operator wrote it (JSON spelling: false, null, "x"), short.

    Only scalars are rendered: a container value may be a YAML alias bomb, whose rendering
    would never finish.
    """
    if isinstance(value, str):
        text = json.dumps(value[:80], ensure_ascii=False)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        text = "a very large integer"
    elif value is None or isinstance(value, bool | int | float):
        text = json.dumps(value)  # NaN and Infinity print as such
    else:
        text = kind_of(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_fields(value: Any, path: PathParts, ctx: Ctx, table: Mapping[str, Field]) -> Any:
    """Check a mapping against a field table; unknown keys are errors; null means omitted."""
    if not isinstance(value, dict):
        ctx.add(path, f"must be a mapping, got {kind_of(value)}")
        return BAD
    for key in value:
        if not isinstance(key, str):
            ctx.add(path, f"key {short(key)} must be a string")
        elif key not in table:
            import difflib  # only on this error path: the agent never needs it otherwise

            close = difflib.get_close_matches(key, table, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(table)
            ctx.add((*path, key), f"unknown field; {hint}")
    out: dict[str, Any] = {}
    for name, spec in table.items():
        raw = value.get(name)
        if raw is None:
            if spec.required:
                ctx.add((*path, name), "is required")
            continue
        out[name] = spec.check(raw, (*path, name), ctx)
    return out


def object_of(table: Mapping[str, Field], build: Callable[..., Any]) -> Check:
    def check(value: Any, path: PathParts, ctx: Ctx) -> Any:
        before = ctx.total
        out = check_fields(value, path, ctx, table)
        return BAD if ctx.total > before else build(**out)

    return check
