"""The fleet simulator (bench/sim) against a real `signalbeam-hub run`: three simulated
devices enroll with a registration token, connect with their own credentials, and are seen
by the hub the way real agents are (online, reported state, metrics); an assignment and a
rollout reach them and they report it; a link cut makes one go offline and, restored, its
backlog is applied exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench.sim import SimError, SimFleet, SimOptions
from bench.sim.benchhub import BenchHub
from bench.sim.workers import SimWorkers
from protocol import natsauth
from tests.harness.sync_hub import SyncHub
from tests.harness.wait import eventually
from tui.client import HubClient

GRACE = 2
WAIT = 60.0


def spec(version: str, name: str = "sim-app") -> dict[str, Any]:
    return {
        "bundle": name,
        "version": version,
        "containers": [{"name": "web", "image": f"127.0.0.1:5000/sbtest/hello:{version}"}],
    }


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    h = SyncHub(tmp_path_factory.mktemp("simulator") / "data", grace=GRACE)
    yield h
    assert h.stop() == 0, h.proc.log_tail() if h.proc else ""


@pytest.fixture
async def setup(hub: SyncHub) -> AsyncIterator[tuple[HubClient, SimFleet]]:
    async with hub.client() as admin:
        for v in ("1.0.0", "2.0.0", "3.0.0"):
            await admin.call("bundles.push", {"spec": spec(v)})
        tok = await admin.call("tokens.create", {"tenant": "sim", "max_uses": 3})
        fleet = SimFleet(
            SimOptions(
                hub_url=hub.enroll_url,
                token=tok["token"],
                count=3,
                prefix="sim",
                tags=("lab",),
                heartbeat_s=0.5,
                rollup_s=1.0,
                apply_s=0.2,
                fail_versions=frozenset({"sim-app@3.0.0"}),
            )
        )
        await fleet.start()
        try:
            yield admin, fleet
        finally:
            await fleet.stop()


def test_options_are_validated() -> None:
    with pytest.raises(SimError) as e:
        SimOptions(hub_url="http://x", token="t")
    assert e.value.field == "hub_url"
    with pytest.raises(SimError) as e:
        SimOptions(hub_url="nats://enroll:pw@127.0.0.1:4222", token="t", count=0)
    assert e.value.field == "count"
    with pytest.raises(SimError) as e:
        SimOptions(hub_url="nats://enroll:pw@127.0.0.1:4222", token="t", tags=("a b",))
    assert e.value.field == "tags[0]"
    with pytest.raises(SimError) as e:
        SimOptions(hub_url="nats://127.0.0.1:4222", token="t")
    assert e.value.field == "hub_url"  # no bootstrap password anywhere
    with pytest.raises(SimError) as e:
        SimOptions(hub_url="nats://enroll:pw@127.0.0.1:4222", token="t", ramp_s=5)
    assert e.value.field == "ramp_s"  # a ramp is for shared connections


async def test_worker_processes_ramp_settle_and_end(tmp_path: Path) -> None:
    """The fleet benchmarks' devices run in worker processes: ramped, drained, and gone when
    stopped or when their parent's pipe closes. A JWT-mode hub (bench_fleet_size's default):
    the workers' shared login is a bearer JWT."""
    ids = [f"wk-{i:06d}" for i in range(40)]
    hub = BenchHub(tmp_path / "hub", seed_devices=ids, grace=30, init_flags=("--nats-auth", "jwt"))
    workers = SimWorkers(hub.client_url, "hub", hub.secret("hub_password"), log_dir=tmp_path,
                         prefix="wk", heartbeat_s=1.0, rollup_s=1.0, per_worker=20,
                         lifetime_s=120)  # fmt: skip
    try:
        await workers.add(0, 40, ramp_s=2.0)
        assert len(workers.workers) == 2

        async def hub_online() -> bool:
            q = "SELECT count(*) FROM devices WHERE status = 'online'"
            return bool(hub.query(q)[0][0] == 40)

        ok, why, _ = await workers.settle(40, 60, backlog_max=40, hub_check=hub_online)
        assert ok, why
        t = workers.totals()
        assert t["ramped"] and t["online"] == 40 and t["alive"] == 2
        await eventually(
            lambda: (
                hub.query("SELECT count(*) FROM device_sync WHERE last_applied_seq > 0")[0][0] == 40
            ),
            timeout=WAIT,
            what="every device's reports applied",
        )
        # A worker whose parent went away (its stdin closed) ends by itself.
        first = workers.workers[0].proc
        assert first.stdin is not None
        first.stdin.close()
        assert await asyncio.wait_for(first.wait(), 20) == 0
        pids = [p.pid for p in workers.processes()]
    finally:
        await workers.stop()
        hub.stop()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)


async def rollout_state(admin: HubClient, rollout_id: str) -> dict[str, Any]:
    r: dict[str, Any] = await admin.call("rollouts.get", {"id": rollout_id})
    return r


async def test_fleet_enrolls_reports_applies_and_delivers_its_backlog_once(
    hub: SyncHub, setup: tuple[HubClient, SimFleet]
) -> None:
    admin, fleet = setup
    assert fleet.ids == ["sim-0000", "sim-0001", "sim-0002"]

    async def all_online_with_state() -> bool:
        for d in fleet.ids:
            got = await admin.call("devices.get", {"id": d})
            if got["status"] != "online" or not (got.get("reported") or {}).get("state"):
                return False
        return True

    await eventually(all_online_with_state, timeout=WAIT, what="online with reported state")
    got = await admin.call("devices.get", {"id": "sim-0001"})
    assert got["tags"] == ["lab"]
    assert got["heartbeat"]["state"]["metrics"]["cpu.percent"] >= 0
    m = await admin.call("metrics.get", {"device": "sim-0001", "since": 0})
    names = {i["name"] for i in m["items"]}
    assert {"cpu.percent", "mem.percent", "disk.percent"} <= names
    assert len({i["ts"] for i in m["items"]}) >= 10  # the backfilled history: a sparkline

    # An assignment reaches every device, which reports it running.
    await admin.call("assign", {"target": "tag:lab", "bundle": "sim-app@1.0.0"})

    async def running(version: str) -> bool:
        for d in fleet.ids:
            got = await admin.call("devices.get", {"id": d})
            dep = ((got.get("reported") or {}).get("state") or {}).get("deployment") or {}
            if dep.get("bundle_ref") != f"sim-app@{version}" or dep.get("status") != "healthy":
                return False
        return True

    await eventually(lambda: running("1.0.0"), timeout=WAIT, what="1.0.0 running")

    # A rollout reaches Succeeded.
    r = await admin.call("rollouts.start", {"bundle": "sim-app@2.0.0", "target": "tag:lab"})
    await eventually(
        lambda: _state_is(admin, r["id"], "succeeded"), timeout=WAIT, what="rollout succeeded"
    )
    assert await running("2.0.0")

    # A version the simulator fails: the rollout does not succeed.
    bad = await admin.call("rollouts.start", {"bundle": "sim-app@3.0.0", "target": "tag:lab"})
    await eventually(
        lambda: _state_is(admin, bad["id"], "paused", "failed"), timeout=WAIT, what="bad rollout"
    )
    await admin.call("rollouts.abort", {"id": bad["id"]})

    # Link cut: offline after the grace; rows keep accumulating on the device.
    victim = "sim-0002"
    applied_before = _applied(hub, victim)
    await fleet.set_online(victim, False)
    await eventually(
        lambda: _status_is(admin, victim, "offline"), timeout=GRACE * 15, what="offline"
    )
    await eventually(lambda: fleet.backlog(victim) >= 3, timeout=WAIT, what="backlog")
    backlog = fleet.backlog(victim)
    last_seq = fleet.device(victim).model.last_seq
    assert _applied(hub, victim) < last_seq
    await fleet.set_online(victim, True)
    await eventually(lambda: _status_is(admin, victim, "online"), timeout=WAIT, what="online")
    await eventually(lambda: _applied(hub, victim) >= last_seq, timeout=WAIT, what="backlog in")
    assert _applied(hub, victim) > applied_before
    # Exactly once: every device event seq appears once, none missing, no gap recorded.
    seqs = [
        r[0]
        for r in hub.query(
            "SELECT seq FROM events WHERE device_id = ? AND seq IS NOT NULL ORDER BY seq",
            (victim,),
        )
    ]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert backlog >= 3
    assert not hub.query(
        "SELECT 1 FROM events WHERE device_id = ? AND kind = 'sync_gap'", (victim,)
    )
    assert fleet.stats()["publish_failures"] == 0 or fleet.backlog(victim) == 0


async def test_per_device_jwt_logins_on_an_operator_mode_hub(tmp_path: Path) -> None:
    """On a JWT-mode hub (the default of new hubs) each simulated device enrolls as an agent
    does: it makes its own nkey, the hub signs a JWT for its public key, and the device logs
    in with that JWT and the nonce signed by its seed (no password: the hub made none). The
    per-device permissions then carry its heartbeats, reports, desired reads, and a
    reconnect after a link cut."""
    hub = SyncHub(tmp_path / "data", grace=GRACE, init_flags=["--nats-auth", "jwt"])
    try:
        async with hub.client() as admin:
            await admin.call("bundles.push", {"spec": spec("1.0.0", "jwt-app")})
            tok = await admin.call("tokens.create", {"tenant": "sim", "max_uses": 2})
            fleet = SimFleet(
                SimOptions(hub_url=hub.enroll_url, token=tok["token"], count=2, prefix="jw",
                           tags=("jwt",), heartbeat_s=0.5, rollup_s=1.0, apply_s=0.2)
            )  # fmt: skip
            await fleet.start()
            try:
                for d in fleet.ids:
                    creds = fleet.credentials[d]
                    assert creds.nats_jwt and creds.nats_password == ""
                    subject = natsauth.claims(creds.nats_jwt)["sub"]
                    assert subject == natsauth.public_key(creds.nats_seed)  # its own key

                async def online(status: str = "online") -> bool:
                    for d in fleet.ids:
                        got = await admin.call("devices.get", {"id": d})
                        if got["status"] != status or not (got.get("reported") or {}).get("state"):
                            return False
                    return True

                await eventually(online, timeout=WAIT, what="online with reported state")
                await admin.call("assign", {"target": "tag:jwt", "bundle": "jwt-app@1.0.0"})

                async def running() -> bool:
                    for d in fleet.ids:
                        got = await admin.call("devices.get", {"id": d})
                        state = (got.get("reported") or {}).get("state") or {}
                        dep = state.get("deployment") or {}
                        if (dep.get("bundle_ref"), dep.get("status")) != (
                            "jwt-app@1.0.0",
                            "healthy",
                        ):
                            return False
                    return True

                await eventually(running, timeout=WAIT, what="the assignment applied")
                # A new connection logs in again with the JWT and a fresh nonce signature.
                victim = fleet.ids[0]
                await fleet.set_online(victim, False)
                await eventually(
                    lambda: _status_is(admin, victim, "offline"), timeout=GRACE * 15,
                    what="offline",
                )  # fmt: skip
                last_seq = fleet.device(victim).model.last_seq
                await fleet.set_online(victim, True)
                await eventually(
                    lambda: _applied(hub, victim) >= last_seq, timeout=WAIT, what="backlog in"
                )
                await eventually(
                    lambda: _status_is(admin, victim, "online"), timeout=WAIT, what="online"
                )
            finally:
                await fleet.stop()
    finally:
        assert hub.stop() == 0, hub.proc.log_tail() if hub.proc else ""


async def _state_is(admin: HubClient, rollout_id: str, *states: str) -> bool:
    return (await rollout_state(admin, rollout_id))["state"] in states


async def _status_is(admin: HubClient, device_id: str, status: str) -> bool:
    return bool((await admin.call("devices.get", {"id": device_id}))["status"] == status)


def _applied(hub: SyncHub, device_id: str) -> int:
    rows = hub.query("SELECT last_applied_seq FROM device_sync WHERE device_id = ?", (device_id,))
    return int(rows[0][0]) if rows else 0
