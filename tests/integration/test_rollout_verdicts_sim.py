"""50 rollouts of a crash-looping version across simulated devices (bench/sim speaking the
device protocol to a real `signalbeam-hub run`): every one ends failed or paused with the
device's reason, none stuck `running`.

The simulated devices roll back as the agent does: the rollout's generation is written
``rolled_back``, then the previous healthy deployment ``healthy`` again (the newest row).
One fleet does both in the same report batch, before the hub's next rollout tick; the other
leaves two seconds (two ticks) between them. The hub used to judge from the newest row only
and left the first kind stuck every time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bench.sim import SimFleet, SimOptions
from tests.harness.sync_hub import SyncHub
from tests.harness.wait import eventually
from tui.client import HubClient

WAIT = 90.0
pytestmark = pytest.mark.timeout(900)  # 25 rollouts one after another per test
DEVICES = 5  # per fleet
ROUNDS = 5  # rollouts per device: 2 fleets x 5 devices x 5 rounds = 50 rollouts
BAD = "sim-app@9.0.0"
REASON = "rolled back: simulated crash loop (fail_versions)"


def spec(version: str) -> dict[str, Any]:
    return {
        "bundle": "sim-app",
        "version": version,
        "containers": [{"name": "web", "image": f"127.0.0.1:5000/sbtest/hello:{version}"}],
    }


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    h = SyncHub(tmp_path_factory.mktemp("verdicts-sim") / "data", grace=5)
    yield h
    assert h.stop() == 0, h.proc.log_tail() if h.proc else ""


async def healthy_on(admin: HubClient, ids: list[str], ref: str) -> bool:
    for d in ids:
        got = await admin.call("devices.get", {"id": d})
        dep = ((got.get("reported") or {}).get("state") or {}).get("deployment") or {}
        if (dep.get("bundle_ref"), dep.get("status")) != (ref, "healthy"):
            return False
    return True


async def until_final(admin: HubClient, rollout_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        r = await admin.call("rollouts.get", {"id": rollout_id})
        if r["state"] in ("paused", "failed", "succeeded", "aborted"):
            return r
        if time.monotonic() > deadline:
            return r  # reported as stuck by the caller
        await asyncio.sleep(0.3)


@pytest.mark.parametrize("rollback_s", [0.0, 2.0], ids=["before-next-tick", "after-ticks"])
async def test_crash_looping_rollouts_all_end(hub: SyncHub, rollback_s: float) -> None:
    prefix = "vs" + str(int(rollback_s))
    async with hub.client() as admin:
        for v in ("1.0.0", "9.0.0"):
            await admin.call("bundles.push", {"spec": spec(v)})
        tok = await admin.call("tokens.create", {"tenant": "sim", "max_uses": DEVICES})
        fleet = SimFleet(
            SimOptions(
                hub_url=hub.enroll_url,
                token=tok["token"],
                count=DEVICES,
                prefix=prefix,
                heartbeat_s=0.5,
                rollup_s=5.0,
                apply_s=0.2,
                fail_versions=frozenset({BAD}),
                rollback_s=rollback_s,
                backfill_minutes=0,
            )
        )
        await fleet.start()
        try:
            ids = fleet.ids
            for d in ids:
                await admin.call("assign", {"target": f"device:{d}", "bundle": "sim-app@1.0.0"})
            await eventually(
                lambda: healthy_on(admin, ids, "sim-app@1.0.0"), timeout=WAIT, what="1.0 healthy"
            )
            outcomes = []
            for _ in range(ROUNDS):
                started = [
                    (await admin.call("rollouts.start",
                                      {"bundle": BAD, "target": f"device:{d}"}))["id"]
                    for d in ids
                ]  # fmt: skip
                for rid in started:
                    r = await until_final(admin, rid)
                    dev = r["devices"][0]
                    outcomes.append((rid, r["state"], dev["state"], dev["reason"]))
                    if r["state"] in ("running", "paused"):
                        await admin.call("rollouts.abort", {"id": rid})
                # Abort gave each device 1.0 back: a new revision, healthy again.
                await eventually(
                    lambda: healthy_on(admin, ids, "sim-app@1.0.0"), timeout=WAIT, what="back"
                )
        finally:
            await fleet.stop()
    assert len(outcomes) == DEVICES * ROUNDS
    stuck = [o for o in outcomes if o[1] not in ("paused", "failed") or o[3] != REASON]
    assert stuck == [], f"{len(stuck)} of {len(outcomes)} stuck or without the reason: {stuck}"
