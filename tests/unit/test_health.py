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
    next_due,
    probe_for,
)
from agent.reconcile.probe import probe_address, run_probe
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
    # Docker: the first probe one interval after the start, never at once.
    assert not due(HealthState(), SPEC, 0.0, started_at=0.0)
    assert not due(HealthState(), SPEC, 0.9, started_at=0.0)
    assert due(HealthState(), SPEC, 1.0, started_at=0.0)
    assert not due(HealthState(last_probe_at=5.0), SPEC, 5.5, started_at=0.0)
    assert due(HealthState(last_probe_at=5.0), SPEC, 6.0, started_at=0.0)
    # ... and each next one an interval after the previous one *finished*.
    slow = HealthState(last_probe_at=5.0, last_done_at=5.8)
    assert not due(slow, SPEC, 6.5, started_at=0.0)
    assert due(slow, SPEC, 6.8, started_at=0.0)


def timeline(
    spec: ProbeSpec, ok_from: float, until: float, *, ok_until: float = 1e9, takes: float = 0.0
) -> list[tuple[float, bool, str, int]]:
    """Docker's schedule and rules, run with our pure functions on a container started at 0
    whose probe passes in [ok_from, ok_until): (probe start, ok, status, streak) per probe."""
    state, out = HealthState(), []
    at = next_due(state, spec, 0.0)
    while at <= until:
        ok = ok_from <= at < ok_until
        state = evaluate(state, ProbeResult(ok, at, done=at + takes), spec, 0.0)
        out.append((at, ok, state.status, state.failing_streak))
        at = next_due(state, spec, 0.0)
    return out


F, T = False, True


@pytest.mark.parametrize(
    ("name", "spec", "ok_from", "ok_until", "takes", "until", "expected"),
    [
        (  # The slow starter: healthy after 5 s, interval 2 s, retries 3, no period.
            # Probing at t=0 made it unhealthy at t=4 in one run and not in another.
            "slow starter is not probed at t=0",
            ProbeSpec("exec", 2.0, 1.0, 3, 0.0),
            5.0,
            1e9,
            0.0,
            6.0,
            [(2.0, F, "starting", 1), (4.0, F, "starting", 2), (6.0, T, "healthy", 0)],
        ),
        (
            "retries consecutive failures make it unhealthy; one success heals",
            ProbeSpec("exec", 1.0, 1.0, 2, 0.0),
            3.5,
            1e9,
            0.0,
            4.0,
            [
                (1.0, F, "starting", 1),
                (2.0, F, "unhealthy", 2),
                (3.0, F, "unhealthy", 3),
                (4.0, T, "healthy", 0),
            ],
        ),
        (
            "failures inside start_period are not counted",
            ProbeSpec("exec", 1.0, 1.0, 1, 5.0),
            4.5,
            1e9,
            0.0,
            5.0,
            [
                (1.0, F, "starting", 0),
                (2.0, F, "starting", 0),
                (3.0, F, "starting", 0),
                (4.0, F, "starting", 0),
                (5.0, T, "healthy", 0),
            ],
        ),
        (
            "a failure starting exactly at the end of start_period counts",
            ProbeSpec("exec", 1.0, 1.0, 1, 2.0),
            99.0,
            1e9,
            0.0,
            2.0,
            [(1.0, F, "starting", 0), (2.0, F, "unhealthy", 1)],
        ),
        (
            "after a success inside start_period, failures count",
            ProbeSpec("exec", 1.0, 1.0, 2, 10.0),
            0.0,
            2.5,
            0.0,
            4.0,
            [
                (1.0, T, "healthy", 0),
                (2.0, T, "healthy", 0),
                (3.0, F, "healthy", 1),
                (4.0, F, "unhealthy", 2),
            ],
        ),
        (
            "the next probe is an interval after the previous one finished",
            ProbeSpec("exec", 1.0, 1.0, 3, 0.0),
            0.0,
            1e9,
            0.5,
            4.0,
            [(1.0, T, "healthy", 0), (2.5, T, "healthy", 0), (4.0, T, "healthy", 0)],
        ),
    ],
)
def test_docker_timeline_table(
    name: str,
    spec: ProbeSpec,
    ok_from: float,
    ok_until: float,
    takes: float,
    until: float,
    expected: list[tuple[float, bool, str, int]],
) -> None:
    assert timeline(spec, ok_from, until, ok_until=ok_until, takes=takes) == expected, name


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
