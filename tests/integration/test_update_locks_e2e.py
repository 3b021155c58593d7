"""End to end: a real `signalbeam-hub run`, one real `signalbeam-agent run` (its leaf linked
through a cuttable proxy), a real Podman engine and the test registry.

An app holds an update lock (a file in the agent's lock directory); a new version assigned
at the hub waits, and the hub (`device show`) says "deferred: locked by ...". The link is
cut; the lock is released while the device is offline, and the device applies the update
on its own; back online, the hub sees it healthy. Then the operator forces a version
through a held lock with the device count typed (a wrong count is refused).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engines import EngineHandle
from tests.harness.registry import Registry
from tests.harness.sync_e2e import Device, enrollment_token, hello_spec
from tests.harness.sync_hub import SyncHub
from tests.harness.wait import eventually
from tui.client import HubClient

pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.timeout(900)]
DEVICE = "lock-1"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    proc = SyncHub(tmp_path_factory.mktemp("lockhub") / "data")
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


@pytest.fixture(scope="module")
def device(
    hub: SyncHub, _podman_service: EngineHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Device]:
    root = tmp_path_factory.mktemp("lockdevices")
    dev = Device(root, DEVICE, hub, _podman_service, enrollment_token(hub, 1))
    assert dev.enroll_result.returncode == 0, dev.enroll_result.stderr
    dev.start()  # with its own lock directory (the harness's Device sets one)
    try:
        yield dev
    finally:
        dev.stop()
        _podman_service.remove_test_containers()


@pytest.fixture
async def admin(hub: SyncHub) -> AsyncIterator[HubClient]:
    async with HubClient(hub.url, hub.admin_key, timeout=60) as c:
        yield c


async def got(admin: HubClient) -> dict[str, Any]:
    return dict(await admin.call("devices.get", {"id": DEVICE}))


async def healthy(admin: HubClient, ref: str) -> bool:
    d = await got(admin)
    dep = (((d.get("reported") or {}).get("state") or {}).get("deployment")) or {}
    return dep.get("bundle_ref") == ref and dep.get("status") == "healthy"


async def signalbeam(hub: SyncHub, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIGNALBEAM_HUB": hub.url, "SIGNALBEAM_API_KEY": hub.admin_key}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        stdin=subprocess.DEVNULL,
    )


async def test_a_lock_held_offline_defers_until_released_then_applies(
    hub: SyncHub, device: Device, admin: HubClient, registry: Registry
) -> None:
    async def online() -> bool:
        return (await got(admin))["status"] == "online"

    await eventually(online, timeout=180, what="the agent online at the hub")
    for v in ("1.0.0", "2.0.0"):
        await admin.call("bundles.push", {"spec": hello_spec(registry, v)})
    await admin.call("assign", {"target": f"device:{DEVICE}", "bundle": "hello@1.0.0"})
    await eventually(partial(healthy, admin, "hello@1.0.0"), timeout=180, what="1.0 healthy")

    lock_dir: Path = device.lock_dir
    lock = lock_dir / "temp-sensor.lock"
    lock.write_text("temp-sensor\n")
    await admin.call("assign", {"target": f"device:{DEVICE}", "bundle": "hello@2.0.0"})

    async def deferred() -> bool:
        gate = (await got(admin)).get("gate") or {}
        return str(gate.get("reason", "")).startswith("locked by temp-sensor since ")

    await eventually(deferred, timeout=120, what="the hub shows the deferral")
    out = await signalbeam(hub, "device", "show", DEVICE)
    assert out.returncode == 0, out.stderr
    assert "hello@2.0.0 deferred: locked by temp-sensor since" in out.stdout
    assert device.running_images() == [registry.ref("sbtest/hello:1.0")]

    device.cut()
    await eventually(lambda: not device.online(), timeout=90, what="the agent sees the cut")
    lock.unlink()  # released while offline: the device goes on alone
    await eventually(
        lambda: device.running_images() == [registry.ref("sbtest/hello:2.0")],
        timeout=180,
        what="2.0 running on the offline device",
    )
    assert not device.online()

    device.restore()
    await eventually(partial(healthy, admin, "hello@2.0.0"), timeout=180, what="2.0 at the hub")

    async def clear() -> bool:
        return (await got(admin)).get("gate") is None

    await eventually(clear, timeout=60, what="the deferral cleared at the hub")


async def test_operator_forces_through_a_lock_with_the_count_typed(
    hub: SyncHub, device: Device, admin: HubClient, registry: Registry
) -> None:
    await eventually(partial(healthy, admin, "hello@2.0.0"), timeout=180, what="2.0 healthy")
    lock_dir: Path = device.lock_dir
    (lock_dir / "calibration.lock").write_text("calibration\n")
    await admin.call("assign", {"target": f"device:{DEVICE}", "bundle": "hello@1.0.0"})

    async def deferred() -> bool:
        return ((await got(admin)).get("gate") or {}).get("bundle_ref") == "hello@1.0.0"

    await eventually(deferred, timeout=120, what="1.0 deferred by the lock")

    wrong = await signalbeam(
        hub, "device", "force-update", DEVICE, "--force-through-lock", "--confirm", "2"
    )
    assert wrong.returncode == 1 and "confirm must be the number of devices (1)" in wrong.stderr
    untyped = await signalbeam(hub, "device", "force-update", DEVICE, "--force-through-lock")
    assert untyped.returncode == 2 and "--confirm 1" in untyped.stderr  # no terminal to ask

    ok = await signalbeam(
        hub, "device", "force-update", DEVICE, "--force-through-lock", "--confirm", "1"
    )
    assert ok.returncode == 0, ok.stderr
    assert f"{DEVICE}: hello@1.0.0 forced through locks and windows" in ok.stdout
    await eventually(partial(healthy, admin, "hello@1.0.0"), timeout=180, what="1.0 forced")
    assert (lock_dir / "calibration.lock").exists()  # the lock itself stays the app's
    events = await admin.call("events.list", {"device": DEVICE, "limit": 200})
    kinds = [e["kind"] for e in events["items"]]
    assert "update.forced" in kinds and "update.deferred" in kinds
