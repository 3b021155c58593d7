"""Finding a container by the name a technician types, and describing it with its stats."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from agent.http.context import AppContext
from agent.http.errors import ApiError
from agent.runtime.base import ObservedContainer
from agent.store import Store
from protocol import errors as perr
from sbutil.tasks import wait_for

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
STATS_TIMEOUT = 3.0
STATS_CACHE_SECONDS = 5.0
_RANK = {"running": 0, "restarting": 1, "paused": 2, "created": 3}


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ApiError(
            perr.INVALID,
            "name: must be a container or service name (letters, digits, _ . -; max 128)",
            "name",
        )
    return name


async def find(ctx: AppContext, name: str) -> ObservedContainer:
    """This device's container called ``name``, by container name or service name.

    During an update a service can have two containers; the live one (running first, then
    newest) is the one a technician means.
    """
    check_name(name)
    containers = await ctx.get_engine().list_containers()
    exact = [c for c in containers if c.name == name]
    if exact:
        return exact[0]
    by_service = [c for c in containers if c.service == name]
    if not by_service:
        raise ApiError(perr.NOT_FOUND, f"no container or service named {name!r} on this device")
    by_service.sort(key=lambda c: (_RANK.get(c.state, 9), -(c.created_at or 0.0)))
    return by_service[0]


class StatsCache:
    """Per-container CPU/memory, cached briefly: a one-shot stats call can take a second."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    async def get(self, ctx: AppContext, c: ObservedContainer) -> dict[str, Any] | None:
        if c.state != "running":
            return None
        hit = self._cache.get(c.id)
        now = time.monotonic()
        if hit is not None and now - hit[0] < STATS_CACHE_SECONDS:
            return hit[1]
        try:
            s = await wait_for(ctx.get_engine().stats(c.id), STATS_TIMEOUT)
            value: dict[str, Any] | None = {
                "cpu_percent": round(s.cpu_percent, 3),
                "memory_bytes": s.memory_bytes,
                # The cap the bundle set wins: Podman's stats report the host's RAM as the
                # limit under a 32 MiB cap. Uncapped, the engine's figure is the real bound.
                "memory_limit": c.memory_limit or s.memory_limit,
            }
        except Exception:
            value = None  # stats are a nicety; the container's state still answers
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[c.id] = (now, value)
        return value


async def judged_health(ctx: AppContext) -> dict[str, str]:
    """The reconcile loop's health per container id, as it saved the observed state (what
    `status`, the hub and the TUI show): it judges a container without a health check
    healthy once it ran through its health window, where the engine only says "none"."""
    return {
        str(row["id"]): str(row["health"])
        for row in await ctx.store.read(Store.observed)
        if row.get("id") and row.get("health")
    }


def describe(
    c: ObservedContainer, stats: dict[str, Any] | None, health: dict[str, str] | None = None
) -> dict[str, Any]:
    d = c.to_dict()
    d["created_at"] = c.created_at
    if health and c.health == "none" and health.get(c.id):
        d["health"] = health[c.id]
    d["stats"] = stats
    return d


async def describe_all(
    ctx: AppContext, cache: StatsCache, containers: list[ObservedContainer]
) -> list[dict[str, Any]]:
    stats = await asyncio.gather(*(cache.get(ctx, c) for c in containers))
    health = await judged_health(ctx)
    return [describe(c, s, health) for c, s in zip(containers, stats, strict=True)]
