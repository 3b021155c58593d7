"""Presence over hub workers on loopback (docs/architecture.md "Scale path"): one
`signalbeam-hub nats` and two `signalbeam-hub run --worker I/2` processes, real nats-server in
password and JWT mode, devices heartbeating with their own logins (one through its own leaf
node, as an agent does).

- Heartbeats of both partitions mark their devices online; each worker takes (answers,
  records, logs) its own partition's devices only, and every heartbeat answered was taken
  exactly once (the workers' counters add up to the answers).
- kill -9 a worker (the standby, or the control-plane owner): its devices' heartbeats go
  unanswered, and after the offline grace the owner's sweep (over the persisted last-seen;
  the standby's once it owns) marks exactly those devices offline; the other partition
  stays online throughout.
- The worker restarted takes its partition back: its devices come online again and stay
  online (no offline flap after the restart), the report backlog stored for them while it
  was dead is applied, and their heartbeats' delivery claims raise no false "lost rows".
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from nats.aio.client import Client as NATS

from agent.sync.jwtauth import write_creds
from agent.sync.leaf import LeafServer, LeafSettings
from hub.metrics import HubMetrics
from hub.store import Store
from hub.sync.audit import Audit
from hub.sync.enroll import enroll_in_store
from hub.sync.streams import ensure_report_stream
from protocol.enroll import EnrollReply, EnrollRequest
from protocol.heartbeat import Heartbeat
from protocol.report import ReportBatch
from protocol.subjects import JS_DOMAIN, REPORT_STREAM, heartbeat, report_partition_of
from tests.harness.hub_workers import WORKERS, DataOnly, Workers, metric, owner
from tests.harness.nats import NatsHub
from tests.harness.sync_hub import (
    FACTS,
    applied,
    device_nc,
    enroll_device,
    event_rows,
    new_token,
    publish_batch,
)
from tests.harness.wait import eventually

GRACE = 6  # seconds: the owner's sweep marks a device offline this long after its last beat
DEVICES = 6
BEAT_EVERY = 1.0
MAX_BEATS = 900  # per device: the senders stop by themselves after this many
ROWS = 300  # the backlog per device of the dead worker's partition
PER_BATCH = 50
ONLINE_LOG = re.compile(r"hub\.sync\.presence: online device=(\S+)")


@dataclass
class Beats:
    """Each device heartbeats (a request, as agents send) every BEAT_EVERY until stopped or
    MAX_BEATS; counts what came back."""

    conns: dict[str, NATS]
    claims: dict[str, int] = field(default_factory=dict)  # device -> last_seq it claims
    sent: dict[str, int] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=dict)
    unanswered: dict[str, int] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        for device in self.conns:
            self.sent[device] = self.answered[device] = self.unanswered[device] = 0
            self.tasks.append(asyncio.create_task(self._run(device)))

    async def _run(self, device: str) -> None:
        nc = self.conns[device]
        for _ in range(MAX_BEATS):
            hb = Heartbeat(
                device, time.time(), "0.1.0", last_seq=self.claims.get(device, 0), outbox_pending=0
            )
            self.sent[device] += 1
            try:
                await nc.request(heartbeat(device), hb.to_json(), timeout=5)
                self.answered[device] += 1
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                self.unanswered[device] += 1
            await asyncio.sleep(BEAT_EVERY)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def heartbeats_taken(port: int) -> float:
    """The worker's count of heartbeats it took (``signalbeam_sync_messages``)."""
    return metric(port, "signalbeam_sync_messages_total", '{kind="heartbeat",result="ok"}')


def logged_online(w: Workers, index: int) -> set[str]:
    """Devices a worker's current process logged as coming online."""
    text = w.procs[index].log_path.read_text(errors="replace")
    return set(ONLINE_LOG.findall(text))


def status(w: Workers, device: str) -> str:
    return str(w.hub.query("SELECT status FROM devices WHERE id = ?", (device,))[0][0])


def presence_events(w: Workers, device: str) -> list[str]:
    rows = w.hub.query(
        "SELECT kind FROM events WHERE device_id = ? AND kind IN ('online', 'offline') ORDER BY id",
        (device,),
    )
    return [r[0] for r in rows]


@pytest.fixture(params=["password", "jwt"])
def workers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Workers]:
    w = Workers(DataOnly(tmp_path / "data", init_flags=("--nats-auth", request.param)))
    # hub.toml, as the deploy writes it: the worker count (so `signalbeam-hub nats` maps
    # heartbeats too) and a short offline grace.
    w.configure(workers=WORKERS, offline_grace=GRACE)
    with w.running():
        yield w


async def leaf_device(w: Workers, creds: EnrollReply, work: Path) -> tuple[LeafServer, NATS]:
    """The device's own leaf node linked to the hub's leafnode port, as the agent runs it,
    and a local connection to it."""
    jwt = bool(creds.nats_jwt)
    if jwt:
        write_creds(work / "device.creds", creds)
    leaf = LeafServer(
        LeafSettings(
            device_id=creds.device_id,
            workdir=work / "leaf",
            hub_leaf_url=f"nats-leaf://127.0.0.1:{w.hub.ports['leafnode']}",
            user=None if jwt else creds.nats_user,
            password=None if jwt else creds.nats_password,
            credentials=str(work / "device.creds") if jwt else None,
        )
    )
    await leaf.start()
    await eventually(leaf.linked, timeout=60, what="the device's leaf links to the hub")
    nc = await nats.connect(leaf.url, inbox_prefix=f"_INBOX.{creds.device_id}")
    return leaf, nc


@pytest.mark.parametrize("kill", ["standby", "owner"])
async def test_presence_follows_the_partition_through_a_worker_kill(
    workers: Workers, tmp_path: Path, kill: str
) -> None:
    w = workers
    await eventually(lambda: owner(w), what="a worker owns the control plane")
    async with w.hub.client() as admin:
        token = await new_token(admin, uses=DEVICES)
    ids = [f"pr-{i}" for i in range(DEVICES)]
    part = {d: report_partition_of(d, WORKERS) for d in ids}
    assert set(part.values()) == set(range(WORKERS)), "the fleet must span every partition"
    fleet = {d: await enroll_device(w.hub, token, d) for d in ids}
    conns: dict[str, NATS] = {}
    leaf: LeafServer | None = None
    try:
        # The last device through its own leaf (the mapping must reach it as interest).
        leaf, conns[ids[-1]] = await leaf_device(w, fleet[ids[-1]], tmp_path / "leafdev")
        for d in ids[:-1]:
            conns[d] = await device_nc(w.hub, fleet[d])
        await run_scenario(w, ids, part, fleet, conns, kill)
    finally:
        for nc in conns.values():
            with contextlib.suppress(Exception):
                await nc.close()
        if leaf is not None:
            await leaf.stop()


async def run_scenario(
    w: Workers,
    ids: list[str],
    part: dict[str, int],
    fleet: dict[str, EnrollReply],
    conns: dict[str, NATS],
    kill: str,
) -> None:
    beats = Beats(conns)
    beats.start()
    try:
        await eventually(
            lambda: all(status(w, d) == "online" for d in ids),
            timeout=90,
            what="every device online",
        )
        # Each worker took its own partition's devices, and only those.
        for i in range(WORKERS):
            own = {d for d in ids if part[d] == i}
            await eventually(
                lambda i=i, own=own: logged_online(w, i) == own,  # type: ignore[misc]
                timeout=60,
                what=f"worker {i} logs its partition's devices online",
            )
        # Every heartbeat was taken once: what the workers count lies between the heartbeats
        # answered before and those sent after (one taken twice would push it past them).
        answered = sum(beats.answered.values())
        taken = sum(heartbeats_taken(w.http[i]) for i in range(WORKERS))
        sent = sum(beats.sent.values())
        assert answered <= taken <= sent, (answered, taken, sent)

        holder = await owner(w)
        assert holder in ("worker-0", "worker-1")
        held = int(holder.removeprefix("worker-"))
        # The owner's kill also stops the sweep until the standby owns (the lease TTL).
        victim = held if kill == "owner" else 1 - held
        mine = [d for d in ids if part[d] == victim]
        theirs = [d for d in ids if part[d] != victim]
        w.procs[victim].kill9()

        # Its devices go unanswered and, after the grace, the owner sweeps them offline.
        await eventually(
            lambda: all(status(w, d) == "offline" for d in mine),
            timeout=90,
            what="the dead worker's devices offline",
        )
        # (Through a leaf a request to no responder times out rather than failing at once.)
        await eventually(
            lambda: all(beats.unanswered[d] > 0 for d in mine),
            timeout=60,
            what="the dead worker's devices' heartbeats go unanswered",
        )
        assert all(status(w, d) == "online" for d in theirs)

        # A backlog stored for its partition while it is dead, and heartbeats that claim it
        # all reached the stream (the delivery audit must find it there, not call it lost).
        await publish_backlog(w, [(d, fleet[d]) for d in mine])
        for d in mine:
            beats.claims[d] = ROWS

        w.start(victim)
        await eventually(
            lambda: all(status(w, d) == "online" for d in mine),
            timeout=90,
            what="the restarted worker's devices online again",
        )
        await eventually(
            lambda: logged_online(w, victim) == set(mine),
            timeout=60,
            what="the restarted worker takes its own partition back",
        )
        await eventually(
            lambda: all(applied(w.hub, d) == ROWS for d in mine),
            timeout=120,
            what="the restarted worker applies its partition's backlog",
        )
        # Two more graces of heartbeats (and owner sweeps) after the restart: no flap.
        target = {d: beats.answered[d] + 2 * GRACE for d in ids}
        await eventually(
            lambda: all(beats.answered[d] >= target[d] for d in ids),
            timeout=120,
            what="heartbeats go on for two graces after the restart",
        )
    finally:
        await beats.stop()
    for d in mine:
        assert presence_events(w, d) == ["online", "offline", "online"], d
        assert status(w, d) == "online", d
    for d in theirs:
        assert presence_events(w, d) == ["online"], d
    lost = w.hub.query("SELECT count(*) FROM events WHERE kind = 'sync_lost'")
    assert lost == [(0,)]


async def publish_backlog(w: Workers, devices: list[tuple[str, EnrollReply]]) -> None:
    for device, creds in devices:
        nc = await device_nc(w.hub, creds)
        try:
            js = nc.jetstream(domain=JS_DOMAIN)
            prev = 0
            for first in range(1, ROWS + 1, PER_BATCH):
                batch = ReportBatch(device, tuple(event_rows(first, PER_BATCH)), prev_seq=prev)
                await publish_batch(js, batch)
                prev = batch.last_seq
        finally:
            await nc.close()


async def test_the_delivery_audit_finds_reports_stored_under_a_partition(
    nats_hub: NatsHub, tmp_path: Path
) -> None:
    """A worker's delivery audit (on its partition's heartbeats) sees a device's reports
    where the workers' stream transform stores them, ``sb.dev.<id>.report.<p>``: waiting
    there is "on its way", not lost; once the stream holds none, the loss is raised."""
    store = Store.open(tmp_path / "hub.db")
    nc = await nats.connect(nats_hub.url)
    try:
        _, token = store.create_enrollment_token("acme", 3600, 1)
        enroll_in_store(store, EnrollRequest(token, "au-1", FACTS), "pw")
        js = nc.jetstream()
        await ensure_report_stream(js, partitions=WORKERS)
        batch = ReportBatch("au-1", tuple(event_rows(1, 5)), prev_seq=0)
        await publish_batch(js, batch)

        async def call(fn: Callable[..., Any], *args: Any) -> Any:
            return fn(*args)

        audit = Audit(js, store, call, HubMetrics())
        await audit.check({"au-1": batch.last_seq})
        assert store.scalar("SELECT count(*) FROM events WHERE kind = 'sync_lost'") == 0

        await js.purge_stream(REPORT_STREAM)  # as if acknowledged and never applied
        await audit.check({"au-1": batch.last_seq})
        assert store.scalar("SELECT count(*) FROM events WHERE kind = 'sync_lost'") == 1
    finally:
        await nc.close()
        store.close()
