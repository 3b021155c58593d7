"""Hub workers on loopback (docs/architecture.md "Scale path"): one `signalbeam-hub nats`
and two `signalbeam-hub run --worker I/2` processes sharing one data dir, real nats-server,
devices publishing with their own credentials.

- kill -9 an ingest worker in the middle of its partition's backlog: the other partition
  goes on, the killed one waits in its durable consumer and resumes when the worker comes
  back; every device's event seqs come out exactly 1..N (nothing lost, nothing doubled);
- kill -9 the control-plane owner: the standby holds the lease within the lease TTL and
  the operator API answers for the whole fleet (devices, events, metrics).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.sync.apply import GIVE_UP_DELIVERIES
from hub.sync.ingest import durable_name
from protocol.report import ReportBatch
from protocol.subjects import JS_DOMAIN, REPORT_STREAM, report_partition_of
from tests.harness.hub_workers import WORKERS, DataOnly, Workers, metric, owner
from tests.harness.sync_hub import (
    applied,
    device_nc,
    enroll_device,
    event_rows,
    event_seqs,
    new_token,
    publish_batch,
)
from tests.harness.wait import eventually

DEVICES = 6
ROWS = 1500  # per device
PER_BATCH = 50


@pytest.fixture(params=["password", "jwt"])
def workers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Workers]:
    # Both login modes: JWT (what `init` writes) has the owner push account JWTs through
    # the system account; password mode reloads `signalbeam-hub nats`'s server by its pid.
    w = Workers(DataOnly(tmp_path / "data", init_flags=("--nats-auth", request.param)))
    with w.running():
        yield w


async def enroll_fleet(w: Workers) -> list[tuple[str, object]]:
    await eventually(lambda: owner(w), what="a worker owns the control plane")
    async with w.hub.client() as admin:
        token = await new_token(admin, uses=DEVICES)
    ids = [f"wk-{i}" for i in range(DEVICES)]
    parts = {report_partition_of(d, WORKERS) for d in ids}
    assert parts == set(range(WORKERS)), "the fleet must span every partition"
    return [(d, await enroll_device(w.hub, token, d)) for d in ids]


async def publish_backlog(
    w: Workers, fleet: list[tuple[str, object]], start: int = 1, end: int = ROWS
) -> None:
    """Every device's events ``start..end``, in PER_BATCH batches, into the stream."""
    for device, creds in fleet:
        nc = await device_nc(w.hub, creds)  # type: ignore[arg-type]
        try:
            js = nc.jetstream(domain=JS_DOMAIN)
            prev = start - 1
            for first in range(start, end + 1, PER_BATCH):
                batch = ReportBatch(device, tuple(event_rows(first, PER_BATCH)), prev_seq=prev)
                ack = await publish_batch(js, batch)
                assert not ack.duplicate
                prev = batch.last_seq
        finally:
            await nc.close()


def assert_exact(w: Workers, fleet: list[tuple[str, object]]) -> None:
    for device, _ in fleet:
        assert event_seqs(w.hub, device) == list(range(1, ROWS + 1)), device
    gaps = w.hub.query("SELECT count(*) FROM events WHERE kind = 'sync_gap'")
    assert gaps == [(0,)]


async def test_killed_ingest_worker_resumes_its_partition(workers: Workers) -> None:
    w = workers
    fleet = await enroll_fleet(w)
    holder = await owner(w)
    # Kill the worker that is not the owner: this test is about ingest alone.
    victim = 1 if holder == "worker-0" else 0
    mine = [d for d, _ in fleet if report_partition_of(d, WORKERS) == victim]
    theirs = [d for d, _ in fleet if report_partition_of(d, WORKERS) != victim]
    # Half the backlog before the kill, half while the victim is dead: its partition holds
    # work for the restarted worker however fast it drained the first half (a loaded CI
    # run saw the victim finish everything before the kill landed).
    half = ROWS // 2
    await publish_backlog(w, fleet, 1, half)

    await eventually(
        lambda: any(applied(w.hub, d) > 0 for d in mine), timeout=90, what="victim ingesting"
    )
    w.procs[victim].kill9()
    at_kill = {d: applied(w.hub, d) for d in mine}
    await publish_backlog(w, fleet, half + 1, ROWS)
    # The other partition is unaffected: it drains to the end while the victim is dead.
    await eventually(
        lambda: all(applied(w.hub, d) == ROWS for d in theirs),
        timeout=120,
        what="the surviving worker drains its partition",
    )
    stalled = {d: applied(w.hub, d) for d in mine}
    assert stalled == at_kill, "nobody else may take a dead worker's partition"
    assert any(v < ROWS for v in stalled.values()), f"victim was not mid-backlog: {stalled}"

    w.start(victim)  # resumes from its durable consumer
    await eventually(
        lambda: all(applied(w.hub, d) == ROWS for d, _ in fleet),
        timeout=120,
        what="the restarted worker resumes its partition",
    )
    assert_exact(w, fleet)


def naks(port: int) -> float:
    """The worker's count of report batches postponed for an earlier one."""
    return metric(port, "signalbeam_sync_naks_total")


async def test_a_dead_workers_unacked_batch_is_waited_for_not_dropped(workers: Workers) -> None:
    """A worker killed with a fetched batch unacked: the stream redelivers it only after
    ACK_WAIT, while the restarted worker already sees the device's next batch. The next one
    must wait for it however long that takes, never give up and drop its rows as replays
    (a loaded CI run lost rows this way)."""
    w = workers
    fleet = await enroll_fleet(w)
    victim = 1 if await owner(w) == "worker-0" else 0
    one = [next((d, c) for d, c in fleet if report_partition_of(d, WORKERS) == victim)]
    device = one[0][0]
    w.procs[victim].kill9()
    # What the dead worker was holding: this test takes the device's first batch from the
    # victim's durable and keeps it unacked (in progress) for as long as it likes.
    nc = await w.hub.hub_nc()
    try:
        sub = await nc.jetstream().pull_subscribe_bind(
            durable=durable_name(victim), stream=REPORT_STREAM
        )
        await publish_backlog(w, one, 1, PER_BATCH)
        [held] = await sub.fetch(1, timeout=30)
        await publish_backlog(w, one, PER_BATCH + 1, 2 * PER_BATCH)
        w.start(victim)

        async def waited_past_giving_up() -> bool:
            await held.in_progress()  # the holder looks alive: no redelivery yet
            overtaken = applied(w.hub, device) > 0
            return overtaken or naks(w.http[victim]) >= GIVE_UP_DELIVERIES + 5

        await eventually(
            waited_past_giving_up, timeout=120, interval=1.0, what="the next batch waiting"
        )
        assert applied(w.hub, device) <= 0, "the next batch may not overtake the held one"
    finally:
        await nc.close()  # the holder dies: its batch comes back after ACK_WAIT
    await eventually(
        lambda: applied(w.hub, device) == 2 * PER_BATCH, timeout=120, what="both applied"
    )
    assert event_seqs(w.hub, device) == list(range(1, 2 * PER_BATCH + 1))
    assert w.hub.query("SELECT count(*) FROM events WHERE kind = 'sync_gap'") == [(0,)]


async def test_killed_owner_standby_takes_over(workers: Workers) -> None:
    w = workers
    fleet = await enroll_fleet(w)
    await publish_backlog(w, fleet)
    await eventually(
        lambda: all(applied(w.hub, d) == ROWS for d, _ in fleet), timeout=120, what="ingested"
    )
    holder = await owner(w)
    assert holder in ("worker-0", "worker-1")
    dead = int(holder.removeprefix("worker-"))
    standby = f"worker-{1 - dead}"

    started = time.monotonic()
    w.procs[dead].kill9()
    await eventually(lambda: _is(owner(w), standby), timeout=60, what="standby owns")
    owned_after = time.monotonic() - started
    async with w.hub.client() as admin:
        listed = await eventually(
            lambda: _try(admin.call("devices.list", {})), timeout=60, what="API answers"
        )
        answered_after = time.monotonic() - started
        ids = {d["id"] for d in listed["items"]}
        assert ids == {d for d, _ in fleet}
        got = await admin.call("devices.get", {"id": fleet[0][0]})
        assert got["id"] == fleet[0][0]
        events = await admin.call("events.list", {"device": fleet[-1][0]})
        assert events["items"], events
        await admin.call("metrics.get", {"device": fleet[0][0]})
        # A write goes through the new owner.
        await admin.call("groups.create", {"name": "after-failover"})
    print(
        f"\ncontrol-plane failover: standby owned {owned_after:.1f} s and the API answered"
        f" {answered_after:.1f} s after kill -9 of the owner"
    )
    # Generous (loaded 2-core box): the lease TTL is 6 s, the standby polls every second.
    assert owned_after < 30, owned_after
    assert_exact(w, fleet)

    # The killed worker comes back as a standby and its partition goes on.
    w.start(dead)
    assert await owner(w) == standby


async def _is(value: Awaitable[str | None], want: str) -> bool:
    return await value == want


async def _try(call: Awaitable[dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return await call
    except Exception:  # the old owner's request timing out: not yet
        return None
