"""Start order by health (``depends_on``) through the real loop, store and both engines.

``db`` serves HTTP only 4 s after it starts; ``app`` depends on it ``service_healthy`` and
refuses to run unless ``db`` answers when it starts (so a start too early is a failure the
container itself reports, not a timing guess); ``worker`` depends on ``app``
``service_started``. The order is read from the engines' ``State.StartedAt``.
"""

from __future__ import annotations

import asyncio
import http.server
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.precedence import revision_of
from agent.runtime import connect
from agent.runtime.base import ObservedContainer
from agent.store import Store
from bundles.model import (
    BundleSpec,
    ContainerSpec,
    Dependency,
    HealthCheck,
    UpdatePolicy,
    UpdateStrategy,
)
from tests.harness.engines import EngineHandle
from tests.harness.ports import free_port
from tests.harness.registry import Registry
from tests.integration.test_reconcile import Rig, rig  # noqa: F401  (the fixture)
from tests.integration.test_reconcile_crash import _start as start_runner

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _serve(port: int, body: str) -> str:
    return (
        f"mkdir -p /tmp/www && echo {body} > /tmp/www/index.html && "
        f"exec httpd -f -p 127.0.0.1:{port} -h /tmp/www"
    )


def _spec(
    registry: Registry,
    port: int,
    db_port: int,
    version: str,
    *,
    db_ready: bool = True,
    db_wait: str = "sleep 4",
    strategy: UpdateStrategy = "download-then-kill",
) -> dict[str, Any]:
    """``db_wait``: what db does before it serves (a ready one); ``port``: app's."""
    hello = registry.ref("sbtest/hello:1.0")
    db_cmd = f"{db_wait}; {_serve(db_port, 'db')}" if db_ready else "exec sleep 3600"
    db = ContainerSpec(
        "db",
        hello,
        command=("/bin/sh", "-c", db_cmd),
        network_mode="host",
        # start_period: the 4 s of silence are not failures; a db that never listens is
        # unhealthy after two counted failures once the period is over.
        healthcheck=HealthCheck(
            "http", port=db_port, interval=0.5, timeout=2.0, retries=2,
            start_period=30.0 if db_ready else 1.0,
        ),
    )  # fmt: skip
    app = ContainerSpec(
        "app",
        hello,
        command=(
            "/bin/sh",
            "-c",
            f"wget -q -O /dev/null http://127.0.0.1:{db_port}/ || "
            f"{{ echo 'db is not serving yet'; exit 1; }}; {_serve(port, version)}",
        ),
        network_mode="host",
        restart="no",  # started too early, it would stay exited and fail the deployment
        healthcheck=HealthCheck("http", port=port, interval=0.5, timeout=2.0, retries=2),
        depends_on=(Dependency("db", "service_healthy"),),
        env=(("VERSION", version),),
    )
    worker = ContainerSpec(
        "worker",
        registry.ref("sbtest/pull:1.0"),
        network_mode="none",
        depends_on=(Dependency("app"),),
    )
    return BundleSpec(
        "ordered",
        version,
        (worker, app, db),
        update=UpdatePolicy(strategy=strategy, health_window=90.0),
    ).to_dict()


async def test_start_order_follows_health_and_a_dependency_never_healthy_rolls_back(
    rig: Rig,  # noqa: F811
) -> None:
    db_port = free_port()
    dep = await rig.apply(_spec(rig.registry, rig.port, db_port, "1.0.0"), max_rounds=900)
    assert dep.status == "healthy", (dep.status, dep.reason)
    ours = {c.service: c for c in await rig.engine.list_containers()}
    assert {s: c.state for s, c in ours.items()} == {
        "db": "running",
        "app": "running",
        "worker": "running",
    }
    started = {s: c.started_at for s, c in ours.items()}
    assert all(t is not None for t in started.values()), started
    assert started["db"] < started["app"] < started["worker"], started  # type: ignore[operator]
    assert ours["app"].restart_count == 0 and rig.answer() == "1.0.0"
    # It took more than one run: app waited, across runs, for db's health.
    runs = rig.store.journal(limit=50)
    assert any(r.trigger and "depends_on" in r.trigger for r in runs), [r.trigger for r in runs]

    # An update whose db never turns healthy: app's new version is never created (its old
    # container keeps serving), the deployment fails naming db, and the device rolls back.
    bad = await rig.apply(
        _spec(rig.registry, rig.port, db_port, "2.0.0", db_ready=False), max_rounds=900
    )
    assert bad.status == "rolled_back", (bad.status, bad.reason)
    assert "db" in (bad.reason or ""), bad.reason
    after = {c.service: c for c in await rig.engine.list_containers()}
    assert after["app"].id == ours["app"].id and after["app"].state == "running"
    assert rig.answer() == "1.0.0"
    planned = [(s["action"], s["service"]) for r in rig.store.journal(limit=50) for s in r.plan]
    assert planned.count(("create", "app")) == 1 and ("recreate", "app") not in planned


def _order(containers: list[ObservedContainer]) -> dict[str, ObservedContainer]:
    ours = {c.service: c for c in containers}
    assert len(ours) == len(containers), containers  # one container per service, no duplicate
    return ours


@pytest.mark.parametrize("engine", ["podman"], indirect=True)
async def test_kill_then_download_rollback_starts_the_old_pair_in_order(
    rig: Rig,  # noqa: F811
) -> None:
    """kill-then-download takes the old app down with the update; the new db never turns
    healthy, so the device rolls back, and the old pair comes back in order: a new db first,
    app created only once db is healthy (app exits, restart "no", if db does not serve when it
    starts, which would fail the rollback). Podman only: the order is the planner's, engine
    for engine the same (the test above runs both), and CI time matters."""
    db_port = free_port()
    good = _spec(rig.registry, rig.port, db_port, "1.0.0", db_wait="sleep 2",
                 strategy="kill-then-download")  # fmt: skip
    dep = await rig.apply(good, max_rounds=900)
    assert dep.status == "healthy", (dep.status, dep.reason)
    before = _order(await rig.engine.list_containers())

    bad = _spec(rig.registry, rig.port, db_port, "2.0.0", db_ready=False,
                strategy="kill-then-download")  # fmt: skip
    failed = await rig.apply(bad, max_rounds=900)
    assert failed.status == "rolled_back", (failed.status, failed.reason)
    assert "db" in (failed.reason or ""), failed.reason
    # The rollback's own health window decides it: wait (bounded) for its verdict.
    for _ in range(600):
        if rig.store.deployment(dep.revision).status == "healthy" and rig.loop.idle:  # type: ignore[union-attr]
            kinds = rig.kinds()
            if kinds.count("deployment.healthy") >= 2:
                break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(rig.kinds())
    after = _order(await rig.engine.list_containers())
    assert {s: (c.version, c.state) for s, c in after.items()} == {
        s: ("1.0.0", "running") for s in ("db", "app", "worker")
    }
    # db and app are new containers (the update took both down), started in order.
    assert after["db"].id != before["db"].id and after["app"].id != before["app"].id
    assert (after["db"].started_at or 0) < (after["app"].started_at or 0), after
    assert after["app"].restart_count == 0 and rig.answer() == "1.0.0"
    # The update never created v2's app: it waited for db until the window failed.
    runs = rig.store.journal(limit=100)
    v2 = [s for r in runs for s in r.plan if s["service"] == "app" and s["action"] == "create"]
    assert len(v2) == 2, v2  # v1's first install and the rollback, nothing for 2.0.0


class _Gate:
    """A tiny HTTP server on 127.0.0.1 that db polls before it serves: db stays unhealthy
    until the test opens it, so the kill lands between db's start and app's, every time."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        self._server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", self.port), http.server.SimpleHTTPRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def wait(self) -> str:
        return f"until wget -q -O /dev/null http://127.0.0.1:{self.port}/; do sleep 0.2; done"


def _list(handle: EngineHandle, device: str) -> list[ObservedContainer]:
    async def go() -> list[ObservedContainer]:
        eng = connect(device, handle.url)
        try:
            return await eng.list_containers()
        finally:
            await eng.close()

    return asyncio.run(go())


@pytest.mark.parametrize("engine", ["podman"], indirect=True)
def test_an_agent_killed_between_the_dependency_and_the_dependent_converges_in_order(
    engine: EngineHandle, registry: Registry, tmp_path: Path
) -> None:
    """kill -9 the agent once db runs and app waits for it; db turns healthy while no agent
    runs; the restarted agent (no health memory) probes db itself, then starts app, then
    worker: one container each, in order, the deployment healthy."""
    device = f"dep-{uuid.uuid4().hex[:8]}"
    db_file, log = tmp_path / "agent.db", tmp_path / "runner.log"
    port, db_port, gate = free_port(), free_port(), _Gate()
    store = Store.open(db_file, device_id=device)
    proc: subprocess.Popen[bytes] | None = None
    try:
        spec = _spec(registry, port, db_port, "1.0.0", db_wait=gate.wait)
        rev = revision_of(store.put_local_desired(spec))
        proc = start_runner(db_file, device, engine, log)
        for _ in range(600):  # bounded: 600 x 0.1 s
            states = {c.service: c.state for c in _list(engine, device)}
            if states.get("db") == "running":
                break
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        else:
            raise AssertionError(f"db never ran: {log.read_text()[-3000:]}")
        assert "app" not in states, states  # db cannot be healthy yet: the gate is shut
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        gate.open()  # db serves while no agent runs
        proc = start_runner(db_file, device, engine, log)
        for _ in range(900):  # bounded: 900 x 0.1 s
            dep = store.deployment(rev)
            ours = _list(engine, device)
            if (
                dep is not None
                and dep.status == "healthy"
                and sorted(c.service for c in ours if c.state == "running")
                == ["app", "db", "worker"]
            ):
                break
            assert dep is None or dep.status == "applying", (dep, log.read_text()[-3000:])
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        else:
            raise AssertionError(f"not converged: {store.deployment(rev)}; {_list(engine, device)}")
        final = _order(ours)
        t = {s: c.started_at or 0 for s, c in final.items()}
        assert t["db"] < t["app"] < t["worker"], t
        assert final["app"].restart_count == 0, final["app"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.read().decode().strip() == "1.0.0"
        creates = [s["service"] for r in store.journal(limit=100) for s in r.plan
                   if s["action"] == "create"]  # fmt: skip
        assert sorted(creates) == ["app", "db", "worker"], creates  # db not created twice
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        gate.close()
        store.close()
