"""The hub killed -9 in the middle of ingesting a backlog, restarted: nothing lost, nothing
doubled. A real `signalbeam-hub run`; the backlog is published with a device's own
credentials before the kill, so it sits in the hub's stream while the hub applies it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from protocol.report import ReportBatch
from protocol.subjects import JS_DOMAIN
from tests.harness.sync_hub import (
    SyncHub,
    applied,
    device_nc,
    enroll_device,
    event_rows,
    publish_batch,
)
from tests.harness.wait import eventually

ROWS = 20_000
PER_BATCH = 100


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    proc = SyncHub(tmp_path_factory.mktemp("crashhub") / "data")
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


async def test_kill_9_mid_backlog_loses_and_doubles_nothing(hub: SyncHub) -> None:
    async with hub.client() as admin:
        tok = await admin.call("tokens.create", {"tenant": "acme"})
    creds = await enroll_device(hub, tok["token"], "crash-1")
    nc = await device_nc(hub, creds)
    try:
        js = nc.jetstream(domain=JS_DOMAIN)
        prev = 0
        acks = []
        for first in range(1, ROWS + 1, PER_BATCH):
            batch = ReportBatch("crash-1", tuple(event_rows(first, PER_BATCH)), prev_seq=prev)
            acks.append(await publish_batch(js, batch))
            prev = batch.last_seq
        assert all(not a.duplicate for a in acks)
    finally:
        await nc.close()

    # Kill while ingest is part way: some rows committed, not all.
    await eventually(lambda: applied(hub, "crash-1") > 0, what="ingest started")
    mid = applied(hub, "crash-1")
    assert hub.proc is not None
    hub.proc.kill9()
    assert 0 < mid < ROWS, f"ingest was not mid-backlog ({mid})"
    after_kill = applied(hub, "crash-1")

    hub.start()
    await eventually(lambda: applied(hub, "crash-1") == ROWS, timeout=90, what="caught up")
    seqs = [
        r[0]
        for r in hub.query(
            "SELECT seq FROM events WHERE device_id = 'crash-1' AND kind = 'test.tick' ORDER BY id"
        )
    ]
    assert seqs == list(range(1, ROWS + 1)), (len(seqs), after_kill)
    assert hub.query(
        "SELECT count(*) FROM events WHERE device_id = 'crash-1' AND kind = 'sync_gap'"
    ) == [(0,)]
