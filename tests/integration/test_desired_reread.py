"""A desired read older than the revision its prompt announced is read again, by the agent
and by the simulator alike (agent.sync.downlink.Announced). On a hub NATS cluster any
replica may answer the direct get, one that has not stored the put yet too; the simulator
did not read again, so a device never saw its revision and a rollout across a node kill
waited on it for ever (test_hub_cluster.py::test_node_killed_during_a_rollout...).

Forced here on one real nats-server: the test publishes the prompt for the next revision
before the put, so the read the prompt causes finds nothing; the bucket has no republish
and the timed reads are an hour apart, so only the read done again can find the put.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from agent.store import Store
from agent.sync.downlink import DownlinkSettings
from agent.sync.service import SyncService, SyncSettings
from bench.sim import SimFleet, SimOptions
from protocol.desired import DesiredState
from protocol.enroll import EnrollReply
from protocol.subjects import DESIRED_BUCKET, REPORT_STREAM, REPORT_WILDCARD, desired_prompt
from tests.harness.nats import NatsHub
from tests.harness.wait import eventually

DOC = DesiredState(0, {"bundle": "b", "version": "1.0.0", "containers": []}).to_json()


@dataclass
class Hub:
    hub: NatsHub
    nc: NATS
    kv: KeyValue

    async def prompt_ahead(self, device_id: str) -> int:
        """Announce the bucket's next revision before it exists (a replica behind)."""
        status = await self.kv.status()
        revision = int(status.values) + 1  # an empty bucket: revision 1, and so on
        await self.nc.publish(
            desired_prompt(device_id), b"", headers={"Nats-Sequence": str(revision)}
        )
        return revision


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    h = NatsHub(tmp_path / "hub")
    nc = await nats.connect(h.url)
    js = nc.jetstream()
    await js.add_stream(name=REPORT_STREAM, subjects=[REPORT_WILDCARD])
    # No republish: the put prompts nobody (the test sends the one prompt itself).
    kv = await js.create_key_value(KeyValueConfig(bucket=DESIRED_BUCKET, history=5, direct=True))
    try:
        yield Hub(h, nc, kv)
    finally:
        await nc.close()
        h.stop()


async def announce_then_put(hub: Hub, device_id: str, reads: Callable[[], int]) -> int:
    before = reads()
    revision = await hub.prompt_ahead(device_id)
    await eventually(lambda: reads() > before, "the read the prompt caused")
    assert await hub.kv.put(device_id, DOC) == revision
    return revision


async def test_the_agent_reads_again_a_revision_announced_ahead(hub: Hub, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "a.db", device_id="dev-7")
    settings = SyncSettings(
        "leaf",
        credentials=EnrollReply("dev-7", "u", "p", f"nats-leaf://127.0.0.1:{hub.hub.leaf_port}"),
        workdir=tmp_path / "leaf",
        downlink=DownlinkSettings(poll_interval=3600.0, fallback_interval=3600.0),
    )
    svc = SyncService(store, settings, "dev-7", trigger=lambda: None)
    try:
        await svc.start()
        down = svc.downlink
        assert down is not None
        await eventually(lambda: svc.online and down.stats.probes >= 1, "online, first read")
        revision = await announce_then_put(hub, "dev-7", lambda: down.stats.probes)
        await eventually(lambda: down.stats.last_revision == revision, "the revision read")
        assert down.stats.missed_prompts == 0  # read again because announced, not by a poll
    finally:
        await svc.stop()
        store.close()


async def test_the_simulator_reads_again_a_revision_announced_ahead(hub: Hub) -> None:
    fleet = SimFleet(
        SimOptions(
            hub_url=hub.hub.url,
            count=1,
            prefix="rr",
            connections=1,
            shared_user="sim",
            enroll=False,
            heartbeat_s=3600,
            rollup_s=3600,
            backfill_minutes=0,
        )
    )
    await fleet.start()
    try:
        dev = fleet.devices["rr-0000"]
        await eventually(lambda: dev.counters.probes >= 1, "the first read")
        revision = await announce_then_put(hub, "rr-0000", lambda: dev.counters.probes)
        await eventually(
            lambda: dev.model.desired_generation == revision, "the revision read", timeout=30
        )
    finally:
        await fleet.stop()
