"""Exec health probes leave no engine processes behind (the Podman conmon pile-up guard).

Podman's API exec sessions keep a conmon pair alive for ``exit_command_delay`` (300 s) after
every exec, so a device probing each container every few seconds piled up hundreds of them.
This runs a bounded number of probe cycles through the agent's own probe path and asserts
that the engine processes belonging to the container come back to their count from before
the probes. It counts processes, it does not time anything: the wait is a generous bound.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import psutil
import pytest

from agent.reconcile.executor import create_request
from agent.reconcile.health import probe_for
from agent.reconcile.probe import run_probe
from agent.runtime import connect
from agent.runtime.base import Engine, ObservedContainer
from bundles.model import ContainerSpec, HealthCheck
from tests.harness.engines import EngineHandle
from tests.harness.ports import free_port, wait_for_port
from tests.harness.registry import Registry

pytestmark = pytest.mark.engine

CYCLES = 8
SETTLE_S = 60.0  # far below Podman's 300 s exec-session delay, far above a probe's life


def engine_processes(container_id: str) -> list[int]:
    """The engine's processes for one container: those naming its id (conmon, the shim) and
    everything below them (the container's own processes, probes still running)."""
    roots = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(container_id in arg for arg in proc.info.get("cmdline") or ()):
            roots.append(proc)
    pids: set[int] = set()
    for root in roots:
        pids.add(root.pid)
        try:
            pids.update(child.pid for child in root.children(recursive=True))
        except psutil.Error:
            continue
    return sorted(pids)


async def settle(container_id: str, baseline: int) -> int:
    deadline = time.monotonic() + SETTLE_S
    count = len(engine_processes(container_id))
    while count > baseline and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        count = len(engine_processes(container_id))
    return count


async def steady(container_id: str) -> int:
    """The count once start-up helpers have gone: two equal samples a second apart."""
    last = len(engine_processes(container_id))
    for _ in range(30):
        await asyncio.sleep(1.0)
        now = len(engine_processes(container_id))
        if now == last:
            return now
        last = now
    return last


async def start(
    eng: Engine, registry: Registry, spec_probe: HealthCheck | None
) -> tuple[ContainerSpec, ObservedContainer]:
    port = free_port()
    spec = ContainerSpec(
        "web",
        registry.ref("sbtest/hello:1.0"),
        env=(("PORT", str(port)),),
        network_mode="host",
        restart="no",
        healthcheck=spec_probe,
    )
    await eng.pull(spec.image)
    name = f"pl-{uuid.uuid4().hex[:8]}"
    req = create_request(
        spec, device_id=eng.device_id, bundle="pl", version="1.0.0", spec_hash="0" * 16, name=name
    )
    cid = await eng.create(req)
    await eng.start(cid)
    await asyncio.to_thread(wait_for_port, port)
    obs = await eng.inspect(cid)
    assert obs is not None and obs.state == "running"
    return spec, obs


@pytest.mark.parametrize("kind", ["exec", "image"])
async def test_exec_probes_leave_no_engine_processes(
    engine: EngineHandle, registry: Registry, kind: str
) -> None:
    eng = connect(f"pl-{uuid.uuid4().hex[:8]}", engine.url)
    try:
        # A bundle's exec probe, or (no probe in the bundle) the image's own HEALTHCHECK.
        probe_cmd = ("/bin/sh", "-c", 'test -n "$PORT" && echo probe ok')
        hc = HealthCheck("exec", command=probe_cmd, interval=1.0, timeout=10.0, retries=1)
        spec, obs = await start(eng, registry, hc if kind == "exec" else None)
        image_hc = await eng.image_healthcheck(obs.id) if kind == "image" else None
        probe = probe_for(spec, image_hc)
        assert probe is not None and probe.kind == kind

        baseline = await steady(obs.id)
        assert baseline >= 1
        for _ in range(CYCLES):
            res = await run_probe(eng, obs, probe, time.monotonic())
            assert res.ok, res.detail
        after = await settle(obs.id, baseline)
        assert after == baseline, (
            f"{engine.kind}: {after - baseline} engine processes left behind by {CYCLES} "
            f"{kind} probes: {engine_processes(obs.id)}"
        )
        if kind == "exec":
            assert "probe ok" in res.detail  # the probe's output still reaches its result
    finally:
        await eng.close()
