"""A phased rollout meets what a site does, with real devices: a real `signalbeam-hub run`,
two real `signalbeam-agent run` processes, a real Podman engine and the test registry.

- An app holds an update lock on the first phase's device: the rollout shows it Pending
  "deferred: locked by temp-sensor since ...", not failed; the phase waits and the
  rollout's reason says so; the second phase is not written. Released, the device updates
  and the rollout goes on to succeed.
- A field tech's local override (`signalbeam-agent apply`) lands while the rollout's
  revision is inside its health window: the device is shown held by the override, not
  failed; `apply --clear` gives the rollout's revision back (not the cleared override, which
  had been the device's last healthy deployment), and the rollout succeeds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.harness.registry import Registry
from tests.harness.sync_e2e import Device, hello_spec, module_fleet, rollout_in
from tests.harness.sync_hub import admin_of_hub, module_hub
from tests.harness.wait import eventually
from tui.client import HubClient

pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.timeout(1200)]
IDS = ("hold-1", "hold-2")  # planned in id order: hold-1 is phase 1
WAIT = 300.0
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]

hub = module_hub("holdhub")
fleet = module_fleet("holddevices", IDS)
admin = admin_of_hub(timeout=60)


def variant(registry: Registry, version: str, image: str, window: float = 30) -> dict[str, Any]:
    spec = hello_spec(registry, "1.0.0")
    spec["version"] = version
    spec["containers"][0]["image"] = registry.ref(image)
    spec["update"] = {"health_window": window}
    return spec


async def healthy_on(admin: HubClient, device: str, ref: str) -> bool:
    got = await admin.call("devices.get", {"id": device})
    dep = ((got.get("reported") or {}).get("state") or {}).get("deployment") or {}
    return (dep.get("bundle_ref"), dep.get("status")) == (ref, "healthy")


async def all_on(admin: HubClient, ref: str) -> bool:
    return all([await healthy_on(admin, d, ref) for d in IDS])


async def lab(admin: HubClient, registry: Registry, ref: str) -> None:
    """Both devices in group lab running ``ref`` healthy."""

    async def online() -> bool:
        items = (await admin.call("devices.list", {}))["items"]
        return set(IDS) <= {d["id"] for d in items if d["status"] == "online"}

    await eventually(online, timeout=120, what="devices online at the hub")
    if "lab" not in {g["name"] for g in (await admin.call("groups.list", {}))["items"]}:
        await admin.call("groups.create", {"name": "lab"})
        for d in IDS:
            await admin.call("groups.add", {"name": "lab", "device": d})
    await admin.call("assign", {"target": "group:lab", "bundle": ref})
    await eventually(lambda: all_on(admin, ref), timeout=WAIT, what=f"both healthy on {ref}")


def agent_apply(dev: Device, *args: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "apply", "--config", str(dev.config), *args, "--json"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


async def device_row(admin: HubClient, rollout_id: str, device: str) -> dict[str, Any]:
    got = await admin.call("rollouts.get", {"id": rollout_id})
    row: dict[str, Any] = next(d for d in got["devices"] if d["device"] == device)
    return row


async def test_a_locked_device_holds_its_phase_saying_so_and_release_goes_on(
    hub: Any, fleet: dict[str, Device], admin: HubClient, registry: Registry
) -> None:
    for s in (variant(registry, "1.0.0", "sbtest/hello:1.0"),
              variant(registry, "2.0.0", "sbtest/hello:2.0")):  # fmt: skip
        await admin.call("bundles.push", {"spec": s})
    await lab(admin, registry, "hello@1.0.0")
    lock = fleet["hold-1"].lock_dir / "temp-sensor.lock"
    lock.write_text("temp-sensor\n")
    try:
        r = await admin.call(
            "rollouts.start",
            {"bundle": "hello@2.0.0", "target": "group:lab", "phases": "1,100%", "bake": "2s"},
        )

        async def held() -> dict[str, Any] | None:
            got: dict[str, Any] = await admin.call("rollouts.get", {"id": r["id"]})
            row = next(d for d in got["devices"] if d["device"] == "hold-1")
            return (
                got if row["reason"].startswith("deferred: locked by temp-sensor since ") else None
            )

        got = await eventually(held, "the rollout shows the lock", timeout=WAIT, interval=0.5)
        rows = {d["device"]: d for d in got["devices"]}
        assert rows["hold-1"]["state"] == "Pending"
        assert (rows["hold-2"]["state"], rows["hold-2"]["reason"]) == (
            "Pending",
            "waiting for phase 2",
        )
        assert got["state"] == "running" and got["counts"]["Failed"] == 0
        assert got["reason"].startswith(
            "phase 1 waits for 1 deferred device: hold-1 locked by temp-sensor since "
        ), got["reason"]
        assert (got["deferred"], got["phases"][0]["deferred"]) == (1, 1)
        assert fleet["hold-1"].running_images() == [registry.ref("sbtest/hello:1.0")]
    finally:
        lock.unlink()
    done = await rollout_in(admin, r["id"], ("succeeded", "failed", "paused"), WAIT)
    assert done["state"] == "succeeded", done
    for d in IDS:
        assert fleet[d].running_images() == [registry.ref("sbtest/hello:2.0")]


async def test_a_field_override_mid_rollout_holds_the_device_and_clear_gives_it_back(
    hub: Any, fleet: dict[str, Device], admin: HubClient, registry: Registry
) -> None:
    # the rollout's version is watched for 90 s: the override lands inside that window
    slow = variant(registry, "2.5.0", "sbtest/hello:1.0", window=90)
    local = variant(registry, "9.0.0", "sbtest/hello:2.0", window=5)
    await admin.call("bundles.push", {"spec": slow})
    await lab(admin, registry, "hello@2.0.0")
    r = await admin.call(
        "rollouts.start",
        {"bundle": "hello@2.5.0", "target": "group:lab", "phases": "1,100%"},
    )

    async def updating() -> bool:
        return (await device_row(admin, r["id"], "hold-1"))["state"] == "Updating"

    await eventually(updating, timeout=WAIT, what="hold-1 applying the rollout's version")
    path = fleet["hold-1"].dir / f"override-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(local))
    agent_apply(fleet["hold-1"], str(path))

    async def held() -> dict[str, Any] | None:
        row = await device_row(admin, r["id"], "hold-1")
        return row if row["reason"].startswith("deferred: local override hello@9.0.0") else None

    row = await eventually(held, "the rollout shows the override", timeout=WAIT, interval=0.5)
    assert row["state"] == "Pending", row
    got = await admin.call("rollouts.get", {"id": r["id"]})
    assert got["counts"]["Failed"] == 0 and got["state"] == "running", got
    assert got["reason"].startswith("phase 1 waits for 1 deferred device: hold-1 local override")
    agent_apply(fleet["hold-1"], "--clear")
    done = await rollout_in(admin, r["id"], ("succeeded", "failed", "paused"), WAIT)
    assert done["state"] == "succeeded", done
    for d in IDS:
        assert fleet[d].running_images() == [registry.ref("sbtest/hello:1.0")]
