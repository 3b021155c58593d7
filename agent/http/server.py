"""Starting and stopping the local API: bind, TLS beyond loopback, and the daemon hook.

The daemon wires it with ``agent.add_task(agent.http.server.serve)``; ``start(ctx)`` is the
lower-level call (tests, other hosts) returning an ``AppRunner`` to ``cleanup()``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from agent import AGENT_VERSION
from agent.context import AgentContext
from agent.http.app import build_app
from agent.http.context import AppContext, HubLink
from agent.http.logs import STREAMS_KEY
from agent.http.lowlevel import JsonErrorAppRunner
from agent.http.tls import ensure_certificate, fingerprint, needs_tls, server_context
from agent.http.tokens import TokenStore
from agent.store import Store

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 5.0


async def start(
    ctx: AppContext,
    *,
    host: str | None = None,
    port: int | None = None,
    tls: bool | None = None,
) -> web.AppRunner:
    """Listen on ``host:port`` (default: the config's ``[http]`` bind and port).

    ``tls`` None means "when bound beyond loopback"; True/False force it either way.
    """
    bind = host if host is not None else ctx.config.http.bind
    port = ctx.config.http.port if port is None else port
    ssl_ctx = None
    if needs_tls(bind) if tls is None else tls:
        cert, key = await asyncio.to_thread(ensure_certificate, ctx.config.data_dir, bind)
        ctx.tls_fingerprint = fingerprint(cert)
        ssl_ctx = server_context(cert, key)
    app = build_app(ctx)
    app.on_shutdown.append(_close_streams)
    # JsonErrorAppRunner: requests aiohttp refuses itself get the API's error shape too.
    runner = JsonErrorAppRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    site = web.TCPSite(runner, bind, port, ssl_context=ssl_ctx, reuse_address=True)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    log.info(
        "local API listening on %s",
        ", ".join(listen_urls(runner)),
        extra={"device": ctx.device_id, "tls_fingerprint": ctx.tls_fingerprint},
    )
    return runner


async def _close_streams(app: web.Application) -> None:
    # Follows notice within one keepalive and end; without this, shutdown waits them out.
    app[STREAMS_KEY].closing = True


def listen_urls(runner: web.AppRunner) -> list[str]:
    out = []
    for site in runner.sites:
        out.append(site.name)
    return out


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (useful with port 0)."""
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    raise RuntimeError("the API is not listening")


def _hub_link(agent: AgentContext) -> HubLink:
    # Duck-typed: whatever the sync service exposes as its link state (online, last_contact).
    started = getattr(getattr(agent, "sync", None), "started_at", None)
    for path in ("link_state", "sync.link", "sync.state"):
        obj: Any = agent
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if obj is not None and hasattr(obj, "online"):
            return HubLink(bool(obj.online), getattr(obj, "last_contact", None), started)
    # No sync service (yet): a [hub] url or an enrollment still means a hub is configured.
    return HubLink(online=False if _hub_configured(agent.config) else None)


def _hub_configured(config: Any) -> bool:
    if config.hub.url is not None:
        return True
    creds = config.hub.credentials_file
    path = Path(creds) if creds else Path(config.data_dir) / "hub-credentials.json"
    return path.exists()


def context_for(agent: AgentContext) -> AppContext:
    """An ``AppContext`` over a running ``agent.daemon.Agent`` (store already open)."""
    store = agent.store
    assert store is not None  # hooks start after the store is open
    return AppContext(
        config=agent.config,
        store=store,
        tokens=TokenStore.in_data_dir(agent.config.data_dir),
        engine_getter=lambda: agent.engine,
        reconcile_getter=lambda: agent.reconcile_loop,
        hub_link=lambda: _hub_link(agent),
        version=AGENT_VERSION,
    )


async def serve(agent: AgentContext, stop: asyncio.Event) -> None:
    """Daemon hook: ``agent.add_task(serve)``. Runs the API until ``stop`` is set."""
    ctx = context_for(agent)
    try:
        runner = await start(ctx)
    except OSError as exc:
        # A busy port must not take the agent down: reconciling matters more than the API.
        await ctx.store.write(
            Store.event,
            "http.unavailable",
            f"local API could not listen on {ctx.config.http.bind}:{ctx.config.http.port}: {exc}",
            severity="error",
        )
        ctx.tokens.close()
        return
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        ctx.tokens.close()
