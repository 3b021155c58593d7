"""``depends_on``: a container's dependencies (Compose's two spellings) and the bundle-wide
checks over them: every dependency names another container of the bundle, and none is a
cycle."""

from __future__ import annotations

from typing import Any

from bundles.checks.base import BAD, MAX_CONTAINERS, Ctx, Field, check_fields, kind_of, short
from bundles.checks.values import choice, dns_label
from bundles.model import Dependency
from bundles.source import PathParts

CONDITIONS = ("service_started", "service_healthy")
DEPENDENCY_FIELDS: dict[str, Field] = {
    "condition": Field(choice(*CONDITIONS)),
}


def depends_on(value: Any, path: PathParts, ctx: Ctx) -> Any:
    """Compose's two spellings: a list of names (each ``service_started``) or a mapping of
    name -> ``{condition: ...}``. Returned sorted by service, as the model wants."""
    before = ctx.total
    entries: list[tuple[PathParts, Any, Any]] = []  # (path, name, condition)
    if isinstance(value, list):
        entries = [((*path, i), name, "service_started") for i, name in enumerate(value)]
    elif isinstance(value, dict):
        for name, body in value.items():
            if not isinstance(name, str):
                ctx.add(path, f"key {short(name)} must be a string")
                continue
            cond = check_fields(body, (*path, name), ctx, DEPENDENCY_FIELDS)
            if cond is not BAD:
                entries.append(((*path, name), name, cond.get("condition", "service_started")))
    else:
        ctx.add(
            path,
            f"must be a list of service names or a mapping of names to {{condition: ...}}, "
            f"got {kind_of(value)}",
        )
        return BAD
    if len(value) > MAX_CONTAINERS:
        ctx.add(path, f"must have at most {MAX_CONTAINERS} entries")
        return BAD
    out: dict[str, Dependency] = {}
    for entry_path, name, condition in entries:
        if dns_label(name, entry_path, ctx) is BAD or condition is BAD:
            continue
        if name in out:
            ctx.add(entry_path, f"{name!r} is listed twice")
            continue
        out[name] = Dependency(name, condition)
        ctx.depends.append((entry_path, name))
    if ctx.total > before:
        return BAD
    return tuple(out[name] for name in sorted(out))


def check_depends(containers: Any, ctx: Ctx) -> None:
    """Every dependency names another container of this bundle, and none is a cycle."""
    if not isinstance(containers, list):
        return
    names = {
        item["name"]: i
        for i, item in enumerate(containers[:MAX_CONTAINERS])
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    }
    edges: dict[str, list[tuple[str, PathParts]]] = {}
    for path, dep in ctx.depends:
        index = path[1]
        item = containers[index] if isinstance(index, int) else None
        owner = item.get("name") if isinstance(item, dict) else None
        if not isinstance(owner, str):
            continue
        if dep == owner:
            ctx.add(path, f"container {owner!r} cannot depend on itself")
        elif dep not in names:
            known = ", ".join(sorted(n for n in names if n != owner)) or "none"
            ctx.add(path, f"unknown service {dep!r}; this bundle's other containers: {known}")
        else:
            edges.setdefault(owner, []).append((dep, path))
    # Depth-first search; a back edge closes a cycle, reported once at the entry that closes it.
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep, path in edges.get(node, []):
            if state.get(dep) == 1:
                # Read from the container whose entry closes the cycle: a -> b -> a.
                cycle = [node, *stack[stack.index(dep) : -1], node]
                ctx.add(path, "dependency cycle: " + " -> ".join(cycle))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):  # at most MAX_CONTAINERS deep: recursion is safe
        if node not in state:
            visit(node)
