"""Rollouts end to end with real devices: a real `signalbeam-hub run`, three real
`signalbeam-agent run` processes (each with its supervised leaf nats-server), a real Podman
engine and the test registry.

`sbtest/hello:2.0` rolls out canary first and every device ends Succeeded, running it;
`sbtest/unhealthy:1.0` fails its health check on the canary, the agent rolls back to 2.0,
the rollout pauses with the agent's reason and the other devices are never touched; abort
gives the canary its previous assignment back.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness.registry import Registry
from tests.harness.sync_e2e import (
    Device,
    lab_on_hello_1,
    module_fleet,
    rollout_in,
)
from tests.harness.sync_hub import admin_of_hub, module_hub
from tests.harness.wait import eventually
from tui.client import HubClient

pytestmark = [pytest.mark.engine, pytest.mark.slow]
IDS = ("roll-1", "roll-2", "roll-3")
WAIT = 150.0  # bound on a whole rollout (pulls, health checks, two phases)


hub = module_hub("rollhub")
fleet = module_fleet("rolldevices", IDS)
admin = admin_of_hub(timeout=60)


async def until(admin: HubClient, rollout_id: str, states: tuple[str, ...]) -> dict[str, Any]:
    return await rollout_in(admin, rollout_id, states, WAIT)


async def test_rollouts_with_real_agents(
    fleet: dict[str, Device], admin: HubClient, registry: Registry
) -> None:
    # Every device first runs 1.0 healthy, so there is something to roll back to.
    await lab_on_hello_1(admin, registry, IDS, WAIT)

    good = await admin.call(
        "rollouts.start", {"bundle": "hello@2.0.0", "target": "group:lab", "canary_percent": 33}
    )
    assert good["phase_count"] == 2
    good = await until(admin, good["id"], ("succeeded", "failed", "paused"))
    assert good["state"] == "succeeded", good
    assert good["counts"]["Succeeded"] == 3
    for d in IDS:
        assert fleet[d].running_images() == [registry.ref("sbtest/hello:2.0")]

    bad = await admin.call(
        "rollouts.start", {"bundle": "hello@3.0.0", "target": "group:lab", "canary_percent": 33}
    )
    bad = await until(admin, bad["id"], ("paused", "failed", "succeeded"))
    assert bad["state"] == "paused" and "more than max-failures 0" in bad["reason"], bad
    failed = [d for d in bad["devices"] if d["state"] == "Failed"]
    assert len(failed) == 1 and failed[0]["reason"].startswith("rolled back:"), failed
    assert "unhealthy" in failed[0]["reason"]
    assert bad["counts"]["Pending"] == 2
    canary = failed[0]["device"]
    # The agent rolled back on its own; the other devices never left 2.0.
    await eventually(
        lambda: fleet[canary].running_images() == [registry.ref("sbtest/hello:2.0")],
        timeout=60,
        what="the canary back on 2.0",
    )
    out = await admin.call("rollouts.abort", {"id": bad["id"]})
    assert out["restored"] == [canary]
    got = await admin.call("devices.get", {"id": canary})
    assert got["desired"]["version"] == "2.0.0"
