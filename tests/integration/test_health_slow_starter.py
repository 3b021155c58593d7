"""The issue's slow starter through the real reconcile loop, store and engine: a service that
turns healthy 5 s after it starts, probed with `interval 2s, retries 3` and no start_period,
is healthy on every run (Docker probes it at about 2, 4 and 6 s). Probing at t≈0 made it
unhealthy at about 4 s, and rolled it back, in some runs and not others."""

from __future__ import annotations

import pytest

from bundles.model import BundleSpec, ContainerSpec, HealthCheck, UpdatePolicy
from tests.integration.test_reconcile import Rig, rig  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.engine, pytest.mark.slow]


async def test_a_slow_starter_is_not_probed_before_one_interval(rig: Rig) -> None:  # noqa: F811
    spec = BundleSpec(
        "slow",
        "1.0.0",
        (
            ContainerSpec(
                "web",
                rig.registry.ref("sbtest/pull:1.0"),
                command=("/bin/sh", "-c", "sleep 5; touch /tmp/ready; exec sleep 3600"),
                network_mode="none",
                healthcheck=HealthCheck(
                    "exec", command=("test", "-f", "/tmp/ready"), interval=2.0, retries=3
                ),
            ),
        ),
        # A deadline, far beyond the start: only an "unhealthy" verdict could fail it early.
        update=UpdatePolicy(health_window=120.0),
    ).to_dict()
    dep = await rig.apply(spec, max_rounds=900)
    assert dep.status == "healthy", (dep.status, dep.reason)
    assert "container.unhealthy" not in rig.kinds()
