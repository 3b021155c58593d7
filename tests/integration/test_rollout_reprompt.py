"""A device that missed its desired prompt still takes a rollout's revision within the
rollout controller's re-publish period (``hub.rollouts.controller.REPUBLISH_EVERY``), not at
its timed read (the agent's ``poll_interval``, 900 s; the simulator has none at all).

The re-publish used to ask the desired writer to publish the unacknowledged devices again,
and the writer puts only a document that changed: nothing was sent, and a device whose
prompt was lost (its link cut at the put, the message dropped) stalled the rollout. The
writer now sends such a device's prompt again without a put (``DesiredWriter.publish``
``prompt=True``).

Real parts: `signalbeam-hub run` and its nats-server, a simulated device (bench/sim) on its
own enrolled connection. The fault is on the device's side: it drops the first prompt that
announces a revision newer than the one it holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench.sim import SimFleet, SimOptions
from hub.rollouts.controller import REPUBLISH_EVERY
from tests.harness.sync_hub import SyncHub
from tests.harness.wait import eventually

pytestmark = pytest.mark.timeout(600)
WAIT = 120.0  # the first 1.0 and, after a missed prompt, well within two re-publish periods
assert REPUBLISH_EVERY * 2 < WAIT


def spec(version: str) -> dict[str, Any]:
    return {
        "bundle": "sim-app",
        "version": version,
        "containers": [{"name": "web", "image": f"127.0.0.1:5000/sbtest/hello:{version}"}],
    }


@pytest.fixture
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    h = SyncHub(tmp_path_factory.mktemp("reprompt") / "data", grace=30)
    yield h
    assert h.stop() == 0, h.proc.log_tail() if h.proc else ""


async def test_a_device_that_missed_its_prompt_takes_the_rollout_on_the_re_publish(
    hub: SyncHub,
) -> None:
    async with hub.client() as admin:
        for v in ("1.0.0", "2.0.0"):
            await admin.call("bundles.push", {"spec": spec(v)})
        tok = await admin.call("tokens.create", {"tenant": "sim", "max_uses": 1})
        fleet = SimFleet(
            SimOptions(
                hub_url=hub.enroll_url,
                token=tok["token"],
                count=1,
                prefix="rp",
                heartbeat_s=0.5,
                rollup_s=5.0,
                apply_s=0.2,
                backfill_minutes=0,
            )
        )
        await fleet.start()
        try:
            (device_id,) = fleet.ids
            dev = fleet.device(device_id)
            await admin.call("assign", {"target": f"device:{device_id}", "bundle": "sim-app@1.0.0"})
            await eventually(lambda: dev.model.desired_generation > 0, "1.0 read", timeout=WAIT)
            held = dev.model.desired_generation

            # Every prompt of the rollout's puts is lost (the hub may put more than once as
            # the rollout starts), until the one announcing the generation the hub recorded
            # last: prompts arrive in put order on the device's one connection, so any later
            # prompt of that generation is one sent again.
            dropped: list[int] = []
            settled: list[int] = []
            prompt = dev.prompt

            def lossy(revision: int = 0) -> None:
                if not settled and revision > held:
                    dropped.append(revision)
                    return
                prompt(revision)

            dev.prompt = lossy  # type: ignore[method-assign]
            rid = (
                await admin.call(
                    "rollouts.start", {"bundle": "sim-app@2.0.0", "target": f"device:{device_id}"}
                )
            )["id"]

            def last_prompt_lost() -> bool:
                rows = hub.query(
                    "SELECT generation, rollout_id FROM desired_published WHERE device_id = ?",
                    (device_id,),
                )
                if not rows or rows[0][1] != rid or not dropped or max(dropped) < rows[0][0]:
                    return False
                settled.append(rows[0][0])
                return True

            await eventually(last_prompt_lost, "the rollout's prompts lost", timeout=WAIT)
            assert dev.model.desired_generation == held  # no read since: nothing prompted it
            await eventually(
                lambda: dev.model.desired_generation >= settled[0], "revision read", timeout=WAIT
            )

            async def succeeded() -> bool:
                r = await admin.call("rollouts.get", {"id": rid})
                return bool(r["state"] == "succeeded")

            await eventually(succeeded, "the rollout succeeded", timeout=WAIT)
        finally:
            await fleet.stop()
