"""End to end: a real `signalbeam-hub run`, three real `signalbeam-agent run` devices (each
with its supervised leaf nats-server, linked through a cuttable proxy), a real Podman engine
and the test registry. Enrollment with a token, a group assignment that every device runs,
remote commands, and a device cut off while a new version is assigned: it keeps running the
old one and recording, then converges, and everything it recorded offline reaches the hub
exactly once. A link flapping every 1-2 s delivers every event once, in order. Last, the
hub itself is killed -9 and restarted: the devices log in again with their enrolled users
and what they recorded meanwhile arrives exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import pytest

from agent.store import Store as AgentStore
from tests.harness.engines import EngineHandle
from tests.harness.registry import Registry
from tests.harness.sync_e2e import (
    Device,
    enrollment_token,
    hello_spec,
    running_fleet,
)
from tests.harness.sync_hub import SyncHub
from tests.harness.wait import eventually
from tui.client import ApiError, HubClient

# Whole device stories: each wait below is bounded on its own, generously for a loaded
# machine, so the per-test limit is the sum of a few of them rather than the suite's 300 s.
pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.timeout(900)]
IDS = ("e2e-1", "e2e-2", "e2e-3")
FLAP_SECONDS = 15.0


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    proc = SyncHub(tmp_path_factory.mktemp("e2ehub") / "data")
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


@pytest.fixture(scope="module")
def fleet(
    hub: SyncHub,
    _podman_service: EngineHandle,
    registry: Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Device]]:
    root = tmp_path_factory.mktemp("e2edevices")
    tok = enrollment_token(hub, 3)
    try:
        with running_fleet(hub, _podman_service, root, IDS, tok) as devices:
            # The token had three uses: a fourth device is refused, and nothing is stored.
            extra = Device(root, "e2e-4", hub, _podman_service, tok)
            assert extra.enroll_result.returncode == 1
            assert "used up" in extra.enroll_result.stdout
            extra.stop()
            yield devices
    finally:
        _podman_service.remove_test_containers()


@pytest.fixture
async def admin(hub: SyncHub) -> AsyncIterator[HubClient]:
    # Generous: on a loaded machine the hub's answer can take well over its idle figure.
    async with HubClient(hub.url, hub.admin_key, timeout=60) as c:
        yield c


async def deployment(admin: HubClient, device: str) -> dict[str, Any]:
    got = await admin.call("devices.get", {"id": device})
    state = (got.get("reported") or {}).get("state") or {}
    dep = state.get("deployment") or {}
    return dep if isinstance(dep, dict) else {}


async def healthy(admin: HubClient, device: str, ref: str) -> bool:
    dep = await deployment(admin, device)
    return dep.get("bundle_ref") == ref and dep.get("status") == "healthy"


async def test_enrolled_devices_run_the_group_assignment(
    hub: SyncHub, fleet: dict[str, Device], admin: HubClient, registry: Registry
) -> None:
    assert hub.query("SELECT id FROM devices WHERE id LIKE 'e2e-%' ORDER BY id") == [
        (d,) for d in IDS
    ]

    async def all_online() -> bool:
        items = (await admin.call("devices.list", {"tag": "lab"}))["items"]
        return sorted(d["id"] for d in items if d["status"] == "online") == list(IDS)

    await eventually(all_online, timeout=180, what="devices online at the hub")
    await admin.call("groups.create", {"name": "lab"})
    for d in IDS:
        await admin.call("groups.add", {"name": "lab", "device": d})
    for v in ("1.0.0", "2.0.0"):
        await admin.call("bundles.push", {"spec": hello_spec(registry, v)})
    res = await admin.call("assign", {"target": "group:lab", "bundle": "hello@1.0.0"})
    assert sorted(res["desired_changed"]) == list(IDS)
    for d in IDS:
        await eventually(partial(healthy, admin, d, "hello@1.0.0"), timeout=180, what=d)
        assert fleet[d].running_images() == [registry.ref("sbtest/hello:1.0")]


async def test_remote_commands_reach_the_device(
    hub: SyncHub, fleet: dict[str, Device], admin: HubClient
) -> None:
    # The hub waits DEVICE_WAIT (5 s) for a device by default; a device on a loaded machine
    # may take longer to answer, so each command asks the hub to wait 30 s.
    res = await admin.call(
        "devices.logs", {"id": "e2e-1", "container": "web", "tail": 5, "timeout": 30}
    )
    assert res["result"]["container"] and isinstance(res["result"]["lines"], list)
    res = await admin.call("devices.reconcile", {"id": "e2e-1", "timeout": 30})
    assert res["result"]["triggered"] is True
    status = await admin.call("devices.status", {"id": "e2e-2", "timeout": 30})
    assert status["result"]["device_id"] == "e2e-2"
    with pytest.raises(ApiError) as missing:
        await admin.call("devices.restart", {"id": "e2e-1", "container": "nothere", "timeout": 30})
    assert missing.value.code == "not_found"
    # The operator CLI: `signalbeam device restart|reconcile|logs`.
    out = await signalbeam(hub, "device", "restart", "e2e-2", "web", "--wait", "30")
    assert out.returncode == 0 and "restarted" in out.stdout, out.stderr
    out = await signalbeam(hub, "device", "reconcile", "e2e-2", "--wait", "30")
    assert out.returncode == 0 and "reconcile triggered on e2e-2" in out.stdout, out.stderr
    out = await signalbeam(hub, "device", "logs", "e2e-2", "web", "--tail", "3", "--wait", "30")
    assert out.returncode == 0, out.stderr


async def signalbeam(hub: SyncHub, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIGNALBEAM_HUB": hub.url, "SIGNALBEAM_API_KEY": hub.admin_key}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


async def test_offline_device_keeps_running_and_delivers_everything_once(
    hub: SyncHub, fleet: dict[str, Device], admin: HubClient, registry: Registry
) -> None:
    off = fleet["e2e-3"]
    off.cut()
    await eventually(lambda: not off.online(), timeout=90, what="agent sees the cut")
    with pytest.raises(ApiError) as offline:
        await admin.call("devices.reconcile", {"id": "e2e-3"})
    assert offline.value.code == "device_offline" and "last seen" in offline.value.message
    out = await signalbeam(hub, "device", "logs", "e2e-3", "web")
    assert out.returncode == 1 and "e2e-3 is offline (last seen" in out.stderr

    # Recorded on the device while cut off (another process writing its store, as the
    # agent's CLI or HTTP API would).
    store = AgentStore.open(off.data / "agent.db", device_id="e2e-3")
    try:
        offline_seqs = [store.event("test.offline", f"offline {i}") for i in range(50)]
    finally:
        store.close()

    await admin.call("assign", {"target": "group:lab", "bundle": "hello@2.0.0"})
    for d in ("e2e-1", "e2e-2"):
        await eventually(partial(healthy, admin, d, "hello@2.0.0"), timeout=180, what=d)
    # The cut device still runs 1.0 and has not heard of 2.0.
    assert off.running_images() == [registry.ref("sbtest/hello:1.0")]
    assert await healthy(admin, "e2e-3", "hello@1.0.0")

    off.restore()
    await eventually(lambda: healthy(admin, "e2e-3", "hello@2.0.0"), timeout=180, what="e2e-3")
    assert off.running_images() == [registry.ref("sbtest/hello:2.0")]

    def hub_seqs() -> list[int]:
        return [
            r[0]
            for r in hub.query(
                "SELECT seq FROM events WHERE device_id = 'e2e-3' AND seq IS NOT NULL ORDER BY seq"
            )
        ]

    last = max(offline_seqs)
    await eventually(lambda: last in hub_seqs(), timeout=120, what="offline events at the hub")
    device_side = [s for s in off.event_seqs() if s <= last]
    assert [s for s in hub_seqs() if s <= last] == device_side  # each once, none missing
    rows = hub.query(
        "SELECT seq FROM events WHERE device_id = 'e2e-3' AND kind = 'test.offline' ORDER BY seq"
    )
    assert [r[0] for r in rows] == offline_seqs


async def test_flapping_link_converges_without_duplicates(
    hub: SyncHub, fleet: dict[str, Device], admin: HubClient, registry: Registry
) -> None:
    dev = fleet["e2e-2"]
    store = AgentStore.open(dev.data / "agent.db", device_id="e2e-2")
    rng = random.Random(5)
    seqs: list[int] = []
    try:
        target = "hello@1.0.0"
        start = time.monotonic()
        flips = 0
        while time.monotonic() - start < FLAP_SECONDS:  # bounded: cut/restore every 1-2 s
            dev.cut() if flips % 2 == 0 else dev.restore()
            flips += 1
            if flips == 4:  # a new desired version lands in the middle of it
                await admin.call("assign", {"target": "device:e2e-2", "bundle": target})
            until = time.monotonic() + rng.uniform(1.0, 2.0)
            while time.monotonic() < until:
                seqs.append(store.event("test.flap", f"flap {len(seqs)}"))
                await asyncio.sleep(0.05)
    finally:
        dev.restore()
        store.close()
    await eventually(lambda: healthy(admin, "e2e-2", target), timeout=180, what="converged")

    def hub_seqs() -> list[int]:
        return [
            r[0]
            for r in hub.query(
                "SELECT seq FROM events WHERE device_id = 'e2e-2' AND kind = 'test.flap'"
                " ORDER BY seq"
            )
        ]

    await eventually(lambda: hub_seqs()[-1:] == seqs[-1:], timeout=120, what="all flap events")
    assert hub_seqs() == seqs  # every one, once, in order
    dup = hub.query(
        "SELECT seq, count(*) FROM events WHERE device_id = 'e2e-2' AND seq IS NOT NULL"
        " GROUP BY seq HAVING count(*) > 1"
    )
    assert dup == []
    await admin.call("unassign", {"target": "device:e2e-2"})


async def test_hub_killed_and_restarted_devices_reconnect_and_deliver_once(
    hub: SyncHub, fleet: dict[str, Device]
) -> None:
    dev = fleet["e2e-1"]
    assert hub.proc is not None
    hub.proc.kill9()  # its nats-server goes with it (parent-death signal): every link drops
    await eventually(lambda: not dev.online(), timeout=90, what="agent sees the hub gone")
    store = AgentStore.open(dev.data / "agent.db", device_id="e2e-1")
    try:
        down_seqs = [store.event("test.hub_down", f"hub down {i}") for i in range(30)]
    finally:
        store.close()

    # The restarted hub writes every enrolled device's user from its store into the new
    # server config, so the leaves log in again without re-enrolling.
    hub.start()
    await eventually(dev.online, timeout=180, what="leaf linked again")

    def hub_seqs() -> list[int]:
        return [
            r[0]
            for r in hub.query(
                "SELECT seq FROM events WHERE device_id = 'e2e-1' AND seq IS NOT NULL ORDER BY seq"
            )
        ]

    last = max(down_seqs)
    await eventually(lambda: last in hub_seqs(), timeout=120, what="events recorded while down")
    assert [s for s in hub_seqs() if s <= last] == [s for s in dev.event_seqs() if s <= last]
    async with HubClient(hub.url, hub.admin_key, timeout=60) as fresh:
        res = await fresh.call("devices.status", {"id": "e2e-1", "timeout": 30})
    assert res["result"]["device_id"] == "e2e-1"
