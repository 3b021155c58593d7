"""The device's RPC callbacks over the running agent (engine, reconciler, store), served by
agent.sync.rpc.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from agent.context import AgentContext
from agent.runtime.restart import restart_container
from agent.store import Store
from agent.sync.errors import RpcFailure
from agent.sync.rpc import RpcHandlers
from protocol.api import RESTART_STOP_TIMEOUT
from protocol.errors import CONFLICT, NOT_FOUND, UNAVAILABLE


class RunningSync(Protocol):
    """What the RPC ``status`` reads of the running ``agent.sync.service.SyncService`` (a
    Protocol: that module imports this one, and an import circle is forbidden)."""

    async def current_status(self) -> dict[str, Any]: ...


def agent_rpc_handlers(
    agent: AgentContext, service: Callable[[], RunningSync | None]
) -> RpcHandlers:
    """RPC callbacks over the running ``agent.daemon.Agent`` (engine, reconciler, store)."""

    def store() -> Store:
        opened = agent.store
        assert opened is not None  # hooks start after the store is open
        return opened

    async def find(container: str) -> Any:
        engine = agent.engine
        if engine is None:
            raise RpcFailure(UNAVAILABLE, "the container engine is not connected")
        for c in await engine.list_containers():
            # An id prefix must be long enough not to pick a container by accident.
            if container in (c.name, c.service, c.id) or (
                len(container) >= 6 and c.id.startswith(container)
            ):
                return engine, c
        raise RpcFailure(NOT_FOUND, f"no container {container!r} on this device", "args.container")

    async def reconcile() -> dict[str, Any]:
        if agent.reconciler is None:
            raise RpcFailure(UNAVAILABLE, "the reconciler is not running (engine not connected?)")
        agent.reconciler.poke("rpc")
        desired = await store().read(Store.current_desired)
        return {"triggered": True, "generation": None if desired is None else desired.generation}

    restarting: set[str] = set()  # container ids: a second restart would race the first

    async def restart(container: str) -> dict[str, Any]:
        engine, c = await find(container)
        if c.id in restarting:
            raise RpcFailure(
                CONFLICT, f"a restart of {c.name} is already in progress", "args.container"
            )
        restarting.add(c.id)
        try:
            # The stop may take the whole RESTART_STOP_TIMEOUT (a process that ignores
            # SIGTERM); callers wait RESTART_WAIT for the answer (protocol.api).
            await restart_container(engine, c, RESTART_STOP_TIMEOUT)
        except Exception as exc:
            await store().write(
                Store.event,
                "container.restart_failed",
                f"restart of container {c.name} by a remote command failed: {exc}",
                data={"container": c.name, "by": "rpc"},
                severity="error",
            )
            raise
        finally:
            restarting.discard(c.id)
        await store().write(
            Store.event,
            "container.restarted",
            f"container {c.name} restarted by a remote command",
            data={"container": c.name, "by": "rpc"},
        )
        return {"container": c.name, "service": c.service, "restarted": True}

    async def logs(container: str, tail: int) -> list[str]:
        engine, c = await find(container)
        lines: list[str] = []
        async for line in engine.logs(c.id, tail=tail):
            lines.append(line.rstrip("\n"))
            if len(lines) >= tail:
                break
        return lines

    async def status() -> dict[str, Any]:
        out: dict[str, Any] = await store().read(Store.status_summary)
        svc = service()
        out["sync"] = None if svc is None else await svc.current_status()
        return out

    return RpcHandlers(reconcile=reconcile, restart=restart, logs=logs, status=status)
