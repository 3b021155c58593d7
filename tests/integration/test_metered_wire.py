"""A metered device's bytes on the wire over 10 accelerated days, on real parts: a real
`signalbeam-hub run`, the agent's real sync parts (SQLite store in WAL, a supervised leaf
nats-server with S2 compression, uplink, heartbeat, desired read) linked through a counting
TCP proxy, and one simulated minute per step (tests/harness/wire.py).

The budget is set at the hub for the device's group and reaches the device in its desired
document; the device paces itself by it. Over 10 days its link stays within the budget,
every event reaches the hub exactly once and in order, and what it gave up is raw detail:
the hub holds its metrics as rows covering many minutes, while the device keeps every
minute itself. The hub shows the bytes used against the budget.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.sync.link import LinkState
from agent.sync.pacing import pacing_for
from protocol.metered import parse_budget
from tests.harness.sync_hub import SyncHub, enroll_device, event_seqs, new_token
from tests.harness.wait import eventually
from tests.harness.wire import WireDevice, simulate
from tui.client import HubClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
DAYS = 10
EVENTS_PER_DAY = 24


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    proc = SyncHub(tmp_path_factory.mktemp("meteredhub") / "data")
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


@pytest.fixture
async def admin(hub: SyncHub) -> AsyncIterator[HubClient]:
    async with HubClient(hub.url, hub.admin_key, timeout=60) as c:
        yield c


async def test_metered_device_stays_within_budget_over_ten_days(
    hub: SyncHub, admin: HubClient, tmp_path: Path
) -> None:
    creds = await enroll_device(hub, await new_token(admin), "meter-1")
    await admin.call("groups.create", {"name": "cellular"})
    await admin.call("groups.add", {"name": "cellular", "device": "meter-1"})
    set_ = await admin.call("metered.set", {"target": "group:cellular", "budget": "100KB/day"})
    assert set_["budget"] == 100_000 and set_["devices"] == ["meter-1"]

    dev = WireDevice(tmp_path / "dev", creds, int(hub.ports["leafnode"]))
    await dev.start()
    try:
        # The budget arrives in the desired document, is kept in the store, and picks the
        # pacing (what the running agent's sync service does every status interval).
        from agent.sync.downlink import Downlink

        js = dev.nc.jetstream(domain=creds.js_domain)
        down = Downlink(
            dev.store, dev.nc, js, dev.device_id, LinkState(dev.device_id), lambda: None
        )

        async def budget_stored() -> bool:
            await down.probe()
            return dev.store.metered_budget() == 100_000

        await eventually(budget_stored, timeout=60, what="the hub's budget in the store")
        pacing = pacing_for(dev.store.metered_budget())
        assert pacing.budget == 100_000 and pacing.rollup_span > 60

        run = await simulate(dev, pacing, label="meter-1", days=DAYS, events_per_day=EVENTS_PER_DAY)
        local_minutes = dev.store.read_now(
            lambda c: c.execute("SELECT count(DISTINCT bucket) FROM metrics_1m").fetchone()[0]
        )
    finally:
        await dev.stop()

    budget = parse_budget("100KB/day")
    assert run.per_day <= budget, (run.per_day, run.up, run.down, run.ping_pair)
    # Every event exactly once, in order (the hub applied them all, none twice).
    want = list(range(1, run.events + 1))

    def events_at_hub() -> list[int]:
        rows = hub.query(
            "SELECT json_extract(data, '$.n') FROM events WHERE device_id = ? AND kind = ?"
            " ORDER BY id",
            ("meter-1", "test.tick"),
        )
        return [int(r[0]) for r in rows]

    await eventually(lambda: events_at_hub() == want, timeout=60, what="every event at the hub")
    assert len(event_seqs(hub, "meter-1")) == run.events == DAYS * EVENTS_PER_DAY
    # Raw detail is what was given up: the device keeps every minute, the hub got rows that
    # each cover a span of them.
    assert local_minutes >= DAYS * 1440 - 1
    hub_rows = hub.query(
        "SELECT count(DISTINCT ts) FROM metrics_1m WHERE device_id = ?", ("meter-1",)
    )[0][0]
    assert 0 < hub_rows <= DAYS * 1440 * 60 // pacing.rollup_span + DAYS

    # The hub shows bytes used against the budget (the device's last full heartbeat).
    got = await admin.call("devices.get", {"id": "meter-1"})
    m = got["metered"]
    assert m["budget_set"] == 100_000 and m["budget"] == 100_000
    assert isinstance(m["bytes_day"], int) and m["bytes_day"] > 0 and not m["over"]
