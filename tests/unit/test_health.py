"""Health evaluation (pure) and the agent's own http/tcp/exec probes (against 127.0.0.1)."""

from __future__ import annotations

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from agent.reconcile.health import (
    HealthState,
    ProbeResult,
    ProbeSpec,
    due,
    evaluate,
    gate,
    probe_address,
    probe_for,
    run_probe,
)
from agent.runtime.base import ExecResult, ImageHealthcheck, ObservedContainer, PortBinding
from agent.runtime.memory import MemContainer, MemoryEngine
from bundles.model import ContainerSpec, HealthCheck
from tests.harness.ports import free_port

SPEC = ProbeSpec("http", interval=1.0, timeout=1.0, retries=3, start_period=0.0, port=80)


def fold(results: list[bool], spec: ProbeSpec = SPEC, started: float = 0.0) -> HealthState:
    state = HealthState()
    for i, ok in enumerate(results):
        state = evaluate(state, ProbeResult(ok, float(i + 1)), spec, started)
    return state


@pytest.mark.parametrize(
    ("results", "status", "streak"),
    [
        ([], "starting", 0),
        ([True], "healthy", 0),
        ([False], "starting", 1),
        ([False, False], "starting", 2),
        ([False, False, False], "unhealthy", 3),
        ([False, False, False, True], "healthy", 0),
        ([True, False], "healthy", 1),
        ([True, False, False, False], "unhealthy", 3),
    ],
)
def test_evaluate_table(results: list[bool], status: str, streak: int) -> None:
    state = fold(results)
    assert (state.status, state.failing_streak) == (status, streak)


def test_failures_in_start_period_do_not_count() -> None:
    spec = ProbeSpec("tcp", 1.0, 1.0, retries=1, start_period=10.0, port=1)
    assert fold([False] * 5, spec).status == "starting"  # probes at t=1..5 < 10
    assert fold([False] * 11, spec).status == "unhealthy"  # t=11 is past the period


@given(st.lists(st.booleans(), max_size=40), st.integers(1, 5))
def test_evaluate_properties(results: list[bool], retries: int) -> None:
    spec = ProbeSpec("exec", 1.0, 1.0, retries, 0.0)
    state = fold(results, spec)
    if results and results[-1]:
        assert state.status == "healthy" and state.failing_streak == 0
    trailing = 0
    for ok in reversed(results):
        if ok:
            break
        trailing += 1
    assert state.failing_streak == trailing
    assert (state.status == "unhealthy") == (trailing >= retries)


def test_due() -> None:
    assert due(HealthState(), SPEC, 0.0)
    assert not due(HealthState(last_probe_at=5.0), SPEC, 5.5)
    assert due(HealthState(last_probe_at=5.0), SPEC, 6.0)


def test_probe_for_prefers_the_bundle_probe() -> None:
    image_hc = ImageHealthcheck(("/bin/true",), 2.0, 1.0, 2, 0.0)
    own = ContainerSpec("web", "x:1", healthcheck=HealthCheck("tcp", port=8080))
    assert probe_for(own, image_hc).kind == "tcp"  # type: ignore[union-attr]
    plain = ContainerSpec("web", "x:1")
    p = probe_for(plain, image_hc)
    assert p is not None and p.kind == "image" and p.command == ("/bin/true",)
    assert probe_for(plain, None) is None


def _c(service: str = "web", state: str = "running", **kw: object) -> ObservedContainer:
    return ObservedContainer(
        id=f"id-{service}", name=service, service=service, bundle="b", version="1",
        spec_hash="h", device="d", state=state, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _gate(**kw: object) -> str:
    args: dict[str, object] = {
        "services": ["web"],
        "containers": {"web": _c()},
        "health": {"web": None},
        "crashes": {},
        "now": 10.0,
        "deadline": 20.0,
        "running_since": {"web": 0.0},
        "min_uptime": 5.0,
        "crash_limit": 3,
        "window": 20.0,
    }
    args.update(kw)
    v = gate(**args)  # type: ignore[arg-type]
    return v.decision


def test_gate_table() -> None:
    assert _gate() == "healthy"  # no probe, up for 10 s >= 5 s
    assert _gate(running_since={"web": 8.0}) == "wait"
    assert _gate(running_since={"web": 18.0}, now=20.0) == "failed"  # window over
    assert _gate(health={"web": HealthState("starting")}) == "wait"
    assert _gate(health={"web": HealthState("healthy")}) == "healthy"
    assert _gate(health={"web": HealthState("unhealthy")}) == "failed"
    assert _gate(crashes={"web": 3}) == "failed"
    assert _gate(containers={"web": _c(state="exited", exit_code=1)}) == "wait"
    assert _gate(containers={"web": None}, now=25.0) == "failed"


def test_probe_address() -> None:
    host = _c(network_mode="host")
    assert probe_address(host, 8080) == 8080
    bridged = _c(network_mode="bridge", ports=(PortBinding(80, "tcp", "0.0.0.0", 18080),))
    assert probe_address(bridged, 80) == 18080
    assert probe_address(bridged, 81) is None


async def test_http_and_tcp_probes_against_loopback() -> None:
    port = free_port()
    app = web.Application()

    async def ok_handler(_r: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def bad_handler(_r: web.Request) -> web.Response:
        return web.Response(status=503)

    app.router.add_get("/ok", ok_handler)
    app.router.add_get("/bad", bad_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        engine = MemoryEngine("d")
        c = _c(network_mode="host")
        ok = await run_probe(engine, c, ProbeSpec("http", 1, 2, 1, 0, port=port, path="/ok"), 1.0)
        bad = await run_probe(engine, c, ProbeSpec("http", 1, 2, 1, 0, port=port, path="/bad"), 1.0)
        tcp = await run_probe(engine, c, ProbeSpec("tcp", 1, 2, 1, 0, port=port), 1.0)
        closed = await run_probe(engine, c, ProbeSpec("tcp", 1, 2, 1, 0, port=free_port()), 1.0)
        assert (ok.ok, bad.ok, tcp.ok, closed.ok) == (True, False, True, False)
        assert "503" in bad.detail
    finally:
        await runner.cleanup()


async def test_exec_probe_uses_engine_exec() -> None:
    engine = MemoryEngine("d")
    engine.containers["c1"] = MemContainer(
        "c1", "web", "x:1", {"io.signalbeam.device": "d"}, state="running"
    )
    c = _c()
    c = ObservedContainer(**{**c.__dict__, "id": "c1"})
    spec = ProbeSpec("exec", 1, 1, 1, 0, command=("/bin/check",))
    assert (await run_probe(engine, c, spec, 0.0)).ok
    engine.exec_results["web"] = ExecResult(1, "boom")
    res = await run_probe(engine, c, spec, 0.0)
    assert not res.ok and "boom" in res.detail
