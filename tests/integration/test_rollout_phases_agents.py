"""Phased rollouts end to end with real devices: a real `signalbeam-hub run`, four real
`signalbeam-agent run` processes (each with its supervised leaf nats-server), a real Podman
engine and the test registry.

- `--phases 1,2,100% --bake 3s` of `sbtest/hello:2.0`: three phases (1, 1 and 2 devices),
  each started only after the one before completed and baked; every device ends Succeeded
  running it, and `signalbeam rollout status ID -o json` carries the phases.
- `--phases 1,2,100% --max-failures 1` of `sbtest/unhealthy:1.0`: phase 1's device rolls back
  (one failure tolerated), phase 2 starts after it, its device rolls back too: the rollout
  pauses with the reason, phase 3 is never written, and abort restores both touched devices.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
from typing import Any

import pytest

from tests.harness.registry import Registry
from tests.harness.sync_e2e import (
    Device,
    lab_on_hello_1,
    module_fleet,
    rollout_in,
)
from tests.harness.sync_hub import SyncHub, admin_of_hub, module_hub
from tests.harness.wait import eventually
from tui import cli
from tui.client import HubClient

pytestmark = [pytest.mark.engine, pytest.mark.slow]
IDS = ("phase-1", "phase-2", "phase-3", "phase-4")
WAIT = 300.0  # bound on a whole rollout on a loaded machine (pulls, health checks, 3 phases)
HELLO_2 = "sbtest/hello:2.0"


hub = module_hub("phasehub")
fleet = module_fleet("phasedevices", IDS)
admin = admin_of_hub(timeout=60)


async def until(admin: HubClient, rollout_id: str, states: tuple[str, ...]) -> dict[str, Any]:
    return await rollout_in(admin, rollout_id, states, WAIT)


@pytest.fixture
async def lab(fleet: dict[str, Device], admin: HubClient, registry: Registry) -> None:
    """Every device in group lab, online and running hello 1.0 healthy (once per module:
    the second test finds it done)."""
    await lab_on_hello_1(admin, registry, IDS, WAIT)


def signalbeam(hub: SyncHub, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = cli.run(["--hub", hub.url, "--api-key", hub.admin_key, *argv], out, err)
    return rc, out.getvalue(), err.getvalue()


async def test_phases_with_bake_complete_on_real_agents(
    hub: SyncHub,
    lab: None,
    fleet: dict[str, Device],
    admin: HubClient,
    registry: Registry,
) -> None:
    rc, out, err = await asyncio.to_thread(
        signalbeam, hub, "rollout", "start", "hello@2.0.0", "--target", "group:lab",
        "--phases", "1,2,100%", "--bake", "3s", "--max-failures", "25%", "-o", "json",
    )  # fmt: skip
    assert rc == 0, err
    started = json.loads(out)
    assert [(p["number"], p["size"]) for p in started["phases"]] == [(1, 1), (2, 1), (3, 2)]
    done = await until(admin, started["id"], ("succeeded", "failed", "paused"))
    assert done["state"] == "succeeded", done
    assert done["counts"]["Succeeded"] == 4
    phases = done["phases"]
    assert [p["state"] for p in phases] == ["done", "done", "done"]
    # phases never overlapped: each started after the one before completed and baked 3 s
    # (the hub's own stamps, so this holds however slow the machine is)
    for before, after in itertools.pairwise(phases):
        assert before["completed_at"] is not None and after["started_at"] is not None
        assert stamp(after["started_at"]) >= stamp(before["completed_at"]) + 3.0
    by_phase = {d["device"]: d["phase"] for d in done["devices"]}
    assert sorted(by_phase.values()) == [1, 2, 3, 3]
    for d in IDS:
        assert fleet[d].running_images() == [registry.ref(HELLO_2)]
    # the CLI's JSON status is the API's, phases included
    rc, out, err = await asyncio.to_thread(
        signalbeam, hub, "rollout", "status", started["id"], "-o", "json"
    )
    assert rc == 0, err
    assert json.loads(out)["phases"] == phases


async def test_a_failing_phase_pauses_with_the_reason_and_abort_restores(
    hub: SyncHub,
    lab: None,
    fleet: dict[str, Device],
    admin: HubClient,
    registry: Registry,
) -> None:
    # whatever ran before (the test above, or nothing): every device on 2.0 at group level
    await admin.call("assign", {"target": "group:lab", "bundle": "hello@2.0.0"})

    async def on_2() -> bool:
        return all(fleet[d].running_images() == [registry.ref(HELLO_2)] for d in IDS)

    await eventually(on_2, timeout=WAIT, what="every device running 2.0")
    bad = await admin.call(
        "rollouts.start",
        {"bundle": "hello@3.0.0", "target": "group:lab", "phases": "1,2,100%",
         "max_failures": 1},
    )  # fmt: skip
    bad = await until(admin, bad["id"], ("paused", "failed", "succeeded"))
    assert bad["state"] == "paused", bad
    assert bad["reason"] == (
        "2 devices failed, more than max-failures 1; resume to go on anyway, or abort"
    )
    failed = {d["device"]: d for d in bad["devices"] if d["state"] == "Failed"}
    assert sorted(d["phase"] for d in failed.values()) == [1, 2]
    for d in failed.values():
        assert d["reason"].startswith("rolled back:") and "unhealthy" in d["reason"], d
    assert [p["state"] for p in bad["phases"]][2] == "pending"  # phase 3 never written
    assert bad["counts"]["Pending"] == 2
    # the agents rolled back on their own
    for device in failed:
        await eventually(
            lambda device=device: fleet[device].running_images() == [registry.ref(HELLO_2)],
            timeout=60,
            what=f"{device} back on 2.0",
        )
    rc, out, err = await asyncio.to_thread(signalbeam, hub, "rollout", "abort", bad["id"])
    assert rc == 0, err
    assert "[aborted]" in out
    got = await admin.call("rollouts.get", {"id": bad["id"]})
    for device in failed:
        assert device in out  # "restored: phase-1, phase-2"
        dev = await admin.call("devices.get", {"id": device})
        assert dev["desired"]["version"] == "2.0.0"
    assert got["state"] == "aborted"
    # the devices of phase 3 were never touched
    for d in IDS:
        if d not in failed:
            assert fleet[d].running_images() == [registry.ref(HELLO_2)]


def stamp(iso: str) -> float:
    import calendar

    whole = calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
    return whole + int(iso[20:23]) / 1000
