"""Red team: a device against presence over hub workers (docs/architecture.md "Scale path").

Real `signalbeam-hub nats` and two `signalbeam-hub run --worker I/2` processes, real
nats-server in password and JWT mode, and an enrolled device with its own login trying to
step outside its partition:

- it publishes its heartbeat straight on another worker's mapped subject
  (``sb.dev.<self>.heartbeat.<k>``, which its permissions allow: ``sb.dev.<self>.>``). That
  worker must ignore it (no answer, nothing counted or recorded): a device cannot pick the
  worker that handles it, so it cannot land on (or flood) a worker outside its partition;
- it publishes another device's heartbeat, mapped or not: refused by nats-server
  (permissions), the other device never comes online;
- it publishes a report batch on a partition subject (``sb.dev.<self>.report.<k>``): no
  stream takes it, nothing is applied.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client as NATS

from hub import natsjwt
from hub.config import DataDir
from protocol import natsauth
from protocol.heartbeat import Heartbeat
from protocol.report import ReportBatch
from protocol.subjects import heartbeat, report_partition_of
from tests.harness.hub_workers import WORKERS, DataOnly, Workers, owner
from tests.harness.sync_hub import applied, device_nc, enroll_device, event_rows, new_token
from tests.harness.wait import eventually
from tests.integration.test_hub_workers_presence import heartbeats_taken, logged_online, status


def ids_by_partition() -> tuple[str, str]:
    """Two device ids, one in partition 0 and one in partition 1."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < WORKERS:
        d = f"rt-{i}"
        found.setdefault(report_partition_of(d, WORKERS), d)
        i += 1
    return found[0], found[1]


@pytest.fixture(params=["password", "jwt"])
def workers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Workers]:
    w = Workers(DataOnly(tmp_path / "data", init_flags=("--nats-auth", request.param)))
    w.configure(workers=WORKERS)
    with w.running():
        yield w


async def test_a_device_cannot_leave_its_partition_or_touch_another(workers: Workers) -> None:
    w = workers
    await eventually(lambda: owner(w), timeout=60, what="a worker owns the control plane")
    async with w.hub.client() as admin:
        token = await new_token(admin, uses=2)
    mine, other = ids_by_partition()  # ``mine`` is worker 0's, ``other`` worker 1's
    creds = await enroll_device(w.hub, token, mine)
    await enroll_device(w.hub, token, other)
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc: NATS = await device_nc(w.hub, creds, error_cb=on_error)
    try:

        def beat(device: str) -> bytes:
            return Heartbeat(device, time.time(), "0.1.0", last_seq=0, outbox_pending=0).to_json()

        # 1. Its own heartbeat on the other worker's mapped subject: ignored.
        for _ in range(3):
            with contextlib.suppress(nats.errors.TimeoutError, nats.errors.NoRespondersError):
                reply = await nc.request(f"{heartbeat(mine)}.1", beat(mine), timeout=5)
                pytest.fail(f"worker 1 answered a heartbeat of worker 0's device: {reply.data!r}")
        # 2. Another device's heartbeat, plain and mapped: refused by nats-server.
        for subject in (heartbeat(other), f"{heartbeat(other)}.1", f"{heartbeat(other)}.0"):
            await nc.publish(subject, beat(other))
        # 3. A report batch on a partition subject: no stream stores it.
        batch = ReportBatch(mine, tuple(event_rows(1, 1))).to_json()
        for k in range(WORKERS):
            with contextlib.suppress(nats.errors.Error):
                await nc.jetstream().publish(f"sb.dev.{mine}.report.{k}", batch, timeout=5)
            await nc.publish(f"sb.dev.{mine}.report.{k}", batch)
        await nc.flush()
        await eventually(
            lambda: sum("ermissions" in e for e in errors) >= 3,
            timeout=30,
            what="nats-server refuses each of another device's heartbeats",
        )
        # Its own heartbeat on its own subject: its own worker takes it.
        reply = await nc.request(heartbeat(mine), beat(mine), timeout=30)
        assert b"error" not in reply.data, reply.data
        await eventually(lambda: status(w, mine) == "online", timeout=60, what="device online")
        assert heartbeats_taken(w.http[1]) == 0, "worker 1 took a heartbeat outside its partition"
        assert mine not in logged_online(w, 1)
        assert status(w, other) != "online"
        assert w.hub.query(
            "SELECT count(*) FROM events WHERE device_id = ? AND kind = 'online'", (other,)
        ) == [(0,)]
        assert applied(w.hub, mine) == 0
    finally:
        await nc.close()


@pytest.mark.parametrize("workers", ["jwt"], indirect=True)
async def test_a_revoked_device_stays_out_and_the_mapping_survives_the_push(
    workers: Workers,
) -> None:
    # Decommission pushes a new account JWT (the revocation) from the owner: the device's
    # cached JWT must be refused, and the push must keep the heartbeat mapping (a JWT without
    # it would leave every worker on the unmapped fallback).
    w = workers
    await eventually(lambda: owner(w), timeout=60, what="a worker owns the control plane")
    async with w.hub.client() as admin:
        token = await new_token(admin, uses=2)
        gone, stays = ids_by_partition()
        gone_creds = await enroll_device(w.hub, token, gone)
        stays_creds = await enroll_device(w.hub, token, stays)
        await admin.call("devices.decommission", {"id": gone})

    async def refused() -> bool:
        try:
            nc = await device_nc(w.hub, gone_creds, allow_reconnect=False, max_reconnect_attempts=1)
        except Exception:
            return True
        try:
            await nc.flush(timeout=10)
        except Exception:
            return True
        finally:
            await nc.close()
        return False

    await eventually(refused, timeout=60, what="the revoked device's cached JWT refused")
    # The account as nats-server holds it now: the revocation and the mapping, together.
    keys = natsjwt.load_keys(DataDir(w.hub.data))
    assert keys is not None
    account = keys.account_public
    url = f"http://127.0.0.1:{w.hub.ports['monitor']}/accountz?acc={account}"
    with urllib.request.urlopen(url, timeout=30) as r:
        detail = json.loads(r.read())["account_detail"]
    assert "sb.dev.*.heartbeat" in detail["mappings"], detail["mappings"]
    revoked = detail["decoded_jwt"]["nats"]["revocations"]
    assert natsauth.public_key(gone_creds.nats_seed) in revoked, revoked
    nc = await device_nc(w.hub, stays_creds)
    try:
        # The other device goes on heartbeating (its own worker, 1, takes it).
        beat = Heartbeat(stays, time.time(), "0.1.0", last_seq=0, outbox_pending=0).to_json()
        reply = await nc.request(heartbeat(stays), beat, timeout=30)
        assert b"error" not in reply.data, reply.data
        await eventually(lambda: status(w, stays) == "online", timeout=60, what="online")
        await eventually(
            lambda: stays in logged_online(w, 1), timeout=60, what="its own worker took it"
        )
        assert heartbeats_taken(w.http[0]) == 0
    finally:
        await nc.close()
