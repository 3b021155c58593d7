"""The agent's own probes: http/tcp from the agent to 127.0.0.1, exec through the engine.

The timing and the evaluation of their results are pure (``agent.reconcile.health``); this
is the I/O. A probe never raises: one that cannot run has failed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import aiohttp

from agent.errors import EngineError
from agent.reconcile.health import ProbeResult, ProbeSpec
from agent.runtime.base import Engine, ObservedContainer


def probe_address(c: ObservedContainer, port: int) -> int | None:
    """Which 127.0.0.1 port reaches the container's ``port``: itself on host networking."""
    if c.network_mode == "host":
        return port
    for p in c.ports:
        if p.container == port and p.host:
            return p.host
    return None


async def run_probe(
    engine: Engine,
    c: ObservedContainer,
    spec: ProbeSpec,
    now: float,
    session: aiohttp.ClientSession | None = None,
) -> ProbeResult:
    """Run one probe; never raises (a probe that cannot run has failed). ``now`` is when it
    starts; its ``done`` is when it finished, for the next one's schedule."""
    result = await _run_probe(engine, c, spec, now, session)
    return replace(result, done=max(now, time.monotonic()))


async def _run_probe(
    engine: Engine,
    c: ObservedContainer,
    spec: ProbeSpec,
    now: float,
    session: aiohttp.ClientSession | None = None,
) -> ProbeResult:
    try:
        if spec.kind in ("exec", "image"):
            res = await engine.exec(c.id, spec.command, spec.timeout)
            return ProbeResult(
                res.exit_code == 0, now, f"exit {res.exit_code}: {res.output[-200:]}"
            )
        if spec.port is None:
            return ProbeResult(False, now, f"{spec.kind} probe has no port")
        port = probe_address(c, spec.port)
        if port is None:
            return ProbeResult(False, now, f"port {spec.port} is not published on the host")
        if spec.kind == "tcp":
            async with asyncio.timeout(spec.timeout):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
            return ProbeResult(True, now, f"tcp 127.0.0.1:{port} open")
        url = f"http://127.0.0.1:{port}{spec.path}"
        own = session is None
        s = session or aiohttp.ClientSession()
        try:
            async with s.get(url, timeout=aiohttp.ClientTimeout(total=spec.timeout)) as resp:
                ok = 200 <= resp.status < 400
                return ProbeResult(ok, now, f"GET {url} -> {resp.status}")
        finally:
            if own:
                await s.close()
    except (TimeoutError, OSError, aiohttp.ClientError, EngineError) as exc:
        return ProbeResult(False, now, f"{spec.kind} probe: {type(exc).__name__}: {exc}")
