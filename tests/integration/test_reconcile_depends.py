"""Start order by health (``depends_on``) through the real loop, store and both engines.

``db`` serves HTTP only 4 s after it starts; ``app`` depends on it ``service_healthy`` and
refuses to run unless ``db`` answers when it starts (so a start too early is a failure the
container itself reports, not a timing guess); ``worker`` depends on ``app``
``service_started``. The order is read from the engines' ``State.StartedAt``.
"""

from __future__ import annotations

from typing import Any

import pytest

from bundles.model import BundleSpec, ContainerSpec, Dependency, HealthCheck, UpdatePolicy
from tests.harness.ports import free_port
from tests.integration.test_reconcile import Rig, rig  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _serve(port: int, body: str) -> str:
    return (
        f"mkdir -p /tmp/www && echo {body} > /tmp/www/index.html && "
        f"exec httpd -f -p 127.0.0.1:{port} -h /tmp/www"
    )


def _spec(r: Rig, db_port: int, version: str, *, db_ready: bool = True) -> dict[str, Any]:
    hello = r.registry.ref("sbtest/hello:1.0")
    db_cmd = f"sleep 4; {_serve(db_port, 'db')}" if db_ready else "exec sleep 3600"
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
            f"{{ echo 'db is not serving yet'; exit 1; }}; {_serve(r.port, version)}",
        ),
        network_mode="host",
        restart="no",  # started too early, it would stay exited and fail the deployment
        healthcheck=HealthCheck("http", port=r.port, interval=0.5, timeout=2.0, retries=2),
        depends_on=(Dependency("db", "service_healthy"),),
        env=(("VERSION", version),),
    )
    worker = ContainerSpec(
        "worker",
        r.registry.ref("sbtest/pull:1.0"),
        network_mode="none",
        depends_on=(Dependency("app"),),
    )
    return BundleSpec(
        "ordered", version, (worker, app, db), update=UpdatePolicy(health_window=90.0)
    ).to_dict()


async def test_start_order_follows_health_and_a_dependency_never_healthy_rolls_back(
    rig: Rig,  # noqa: F811
) -> None:
    db_port = free_port()
    dep = await rig.apply(_spec(rig, db_port, "1.0.0"), max_rounds=900)
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
    bad = await rig.apply(_spec(rig, db_port, "2.0.0", db_ready=False), max_rounds=900)
    assert bad.status == "rolled_back", (bad.status, bad.reason)
    assert "db" in (bad.reason or ""), bad.reason
    after = {c.service: c for c in await rig.engine.list_containers()}
    assert after["app"].id == ours["app"].id and after["app"].state == "running"
    assert rig.answer() == "1.0.0"
    planned = [(s["action"], s["service"]) for r in rig.store.journal(limit=50) for s in r.plan]
    assert planned.count(("create", "app")) == 1 and ("recreate", "app") not in planned
