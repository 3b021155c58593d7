"""A live device's bytes on the wire, over accelerated days (no tests here).

The device is the agent's real sync parts in process: its SQLite store (WAL), a supervised
leaf nats-server linked to a real hub through a counting ``TcpProxy`` (TCP payload both ways,
after the leaf's S2 compression), the uplink, the heartbeat and the desired read. Only the
clock is simulated: one step per device minute, in which the device samples its metrics and
folds them (``agent.metrics.folding`` at that minute), records the events due, and runs each
timer that has come due by the pacing (``agent.sync.pacing``): a heartbeat (a real request
the hub answers), an uplink round (``Uplink.drain_once`` at that time: events go at once,
rollups when their flush time has come) and the desired key's safety-net read. So each
message crosses the link as it would live, one minute's row alone when that is the pacing,
never a day replayed in a few large batches.

The leaf link's keepalive runs on real time, so it is measured apart: the bytes of a few
PING/PONG pairs at a short interval on the same link, times the pairs a day has at the
pacing's interval (the hub's side pings at its own 120 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.metrics import folding
from agent.metrics.sampler import HOST_METRICS
from agent.store import Store
from agent.sync.downlink import Downlink
from agent.sync.heartbeat import HeartbeatTask, heartbeat_from_status
from agent.sync.leaf import LeafServer, LeafSettings
from agent.sync.link import LinkState, connect
from agent.sync.pacing import DAY, HUB_PING, LinkUsage, Pacing
from agent.sync.uplink import Uplink
from protocol.enroll import EnrollReply
from protocol.heartbeat import Heartbeat
from tests.harness.proxy import TcpProxy

# A device's metrics per sample, with the names a real one reports (sampler.sample_host's,
# less the temperature as the wire figures were measured, plus two containers' cpu and
# memory).
METRICS = (
    *(m for m in HOST_METRICS if m != "temp.celsius"),
    "container.web.cpu_percent",
    "container.web.mem_bytes",
    "container.db.cpu_percent",
    "container.db.mem_bytes",
)
SAMPLES_PER_MINUTE = 2  # the store folds whatever it holds; the row's size is per minute


@dataclass
class WireRun:
    label: str
    days: float
    pacing: Pacing
    up: int = 0
    down: int = 0
    heartbeats: int = 0
    reports: int = 0
    rows: int = 0
    events: int = 0
    polls: int = 0
    ping_pair: float = 0.0  # measured bytes of one PING/PONG pair on this link
    wall: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pings_per_day(self) -> float:
        return DAY / self.pacing.leaf_ping + DAY / HUB_PING

    @property
    def per_day(self) -> float:
        """Bytes per device day: the measured messages plus the keepalives."""
        return (self.up + self.down) / self.days + self.pings_per_day * self.ping_pair


def _values(minute: int, k: int) -> dict[str, float]:
    # Realistic, moving values: a metric that never changes would compress unrealistically.
    out: dict[str, float] = {}
    for i, name in enumerate(METRICS):
        base = (i + 1) * 7.3 if "percent" in name or "load" in name else 1e9 + i * 1e7
        out[name] = base * (1 + 0.05 * ((minute * 7 + k * 3 + i) % 11) / 11)
    out["uptime.seconds"] = 1e5 + minute * 60.0 + k
    return out


class WireDevice:
    """The sync parts of one enrolled device, its leaf dialling the hub through a proxy."""

    def __init__(self, work: Path, creds: EnrollReply, leaf_port: int) -> None:
        self.work = work
        self.creds = creds
        self.device_id = creds.device_id
        self.proxy = TcpProxy(leaf_port)
        self.store = Store.open(work / "agent.db", device_id=self.device_id)
        self.link = LinkState(self.device_id)
        self.leaf = LeafServer(
            LeafSettings(
                device_id=self.device_id,
                workdir=work / "leaf",
                hub_leaf_url=f"nats-leaf://127.0.0.1:{self.proxy.port}",
                user=creds.nats_user,
                password=creds.nats_password,
                ping_interval=3600.0,
            )
        )
        self.nc: Any = None

    async def start(self) -> None:
        await self.leaf.start()
        self.nc = await connect(
            self.leaf.url, self.device_id, user=None, password=None, name="wire-device"
        )
        for _ in range(600):  # bounded: 60 s for the leaf's link to come up
            if await self.leaf.linked():
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the leaf never linked to the hub")

    async def stop(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        await self.leaf.stop()
        self.proxy.close()
        self.store.close()

    def counted(self) -> tuple[int, int]:
        return self.proxy.bytes_up, self.proxy.bytes_down

    async def ping_pair_bytes(self, pairs: int = 10, interval: float = 0.2) -> float:
        """Bytes of one PING/PONG pair on the link: the leaf pings every ``interval`` s with
        nothing else moving, for ``pairs`` intervals."""
        self.leaf.set_ping_interval(interval)
        await asyncio.sleep(interval * 2)  # the reload lands
        up0, down0 = self.counted()
        await asyncio.sleep(interval * pairs)
        up1, down1 = self.counted()
        self.leaf.set_ping_interval(3600.0)
        return (up1 - up0 + down1 - down0) / pairs


async def simulate(
    dev: WireDevice,
    pacing: Pacing,
    *,
    label: str,
    days: float,
    events_per_day: int = 24,
    event_kind: str = "test.tick",
    legacy: bool = False,
) -> WireRun:
    """Run ``days`` device days at one step per minute (see the module docstring).

    ``legacy``: the behaviour before pacing, for a same-run baseline: every row sent as soon
    as it is queued (the uplink polled its outbox every second, so each minute's rollup
    travelled alone) and a row per minute."""
    store, nc = dev.store, dev.nc
    js = nc.jetstream(domain=dev.creds.js_domain)
    uplink = Uplink(store, js, dev.device_id, dev.link, report_link=False)
    uplink.flush_after = 0.0 if legacy else pacing.flush
    store.set_upstream_span(60 if legacy else pacing.rollup_span)
    state: dict[str, Any] = {}
    usage = LinkUsage()

    async def summary() -> Heartbeat:
        return heartbeat_from_status(
            dev.device_id,
            await store.read(Store.status_summary),
            interval=pacing.heartbeat,
            budget=pacing.budget,
            bytes_day=state.get("bytes_day"),
        )

    beat = HeartbeatTask(nc, dev.device_id, dev.link, summary, interval=max(pacing.heartbeat, 1.0))
    if legacy:  # a full heartbeat every interval, as before
        beat.idle_factor, beat.full_every = 1.0, 0.0
    clock = [0.0]
    beat.clock = uplink.clock = lambda: clock[0]
    down = Downlink(store, nc, js, dev.device_id, dev.link, lambda: None, report_link=False)
    run = WireRun(label, days, pacing)
    run.ping_pair = await dev.ping_pair_bytes()
    await asyncio.sleep(0.5)
    up0, down0 = dev.counted()
    t0 = float(int(time.time() // 3600 * 3600))  # whole hours: spans line up as live
    minutes = int(days * 1440)
    every_event = max(1, 1440 // max(1, events_per_day)) if events_per_day else 0
    last_beat = last_poll = -float("inf")
    started = time.monotonic()
    for m in range(minutes):
        now = t0 + m * 60.0
        clock[0] = now
        for k in range(SAMPLES_PER_MINUTE):
            store.record_samples(now + k * 60.0 / SAMPLES_PER_MINUTE, _values(m, k))
        await asyncio.to_thread(folding.roll_up, store, now)
        if every_event and m % every_event == every_event - 1:
            run.events += 1
            store.event(event_kind, f"tick {run.events}", data={"n": run.events})
        # Every timer instant inside this minute (a 30 s heartbeat beats twice).
        while last_beat + beat.current_interval < now + 60.0:
            last_beat = now if last_beat == -float("inf") else last_beat + beat.current_interval
            clock[0] = last_beat
            run.heartbeats += 1
            if not await beat.beat():
                raise RuntimeError("the hub did not answer a heartbeat")
        clock[0] = now + 59.0
        while last_poll + pacing.desired_poll < now + 60.0:
            last_poll = now if last_poll == -float("inf") else last_poll + pacing.desired_poll
            run.polls += 1
            await down.probe()
        before = uplink.stats.batches_sent
        run.rows += await uplink.drain_once()
        run.reports += uplink.stats.batches_sent - before
        if m % 60 == 59:  # the agent samples its link's traffic; the heartbeat says 24 h
            up, dn = dev.counted()
            usage.sample(now, up - up0 + dn - down0)
            state["bytes_day"] = usage.last_day()
    # What is still waiting at the end is sent, as the next flush would.
    uplink.flush_after = 0.0
    while sent := await uplink.drain_once():
        run.rows += sent
    run.reports = uplink.stats.batches_sent
    run.extra["full_heartbeats"] = beat.full_sent
    await asyncio.sleep(0.5)  # the last PubAck's bytes have crossed
    up1, down1 = dev.counted()
    run.up, run.down = up1 - up0, down1 - down0
    run.wall = time.monotonic() - started
    return run


def pacing_label(p: Pacing) -> str:
    return (
        f"heartbeat {p.heartbeat:g}s, rollups every {p.flush:g}s, rows of {p.rollup_span}s,"
        f" desired read {p.desired_poll:g}s, leaf ping {p.leaf_ping:g}s"
    )


def legacy_pacing(p: Pacing) -> Pacing:
    """The pacing before metered links: a full heartbeat every 30 s, rows at once (one per
    minute), the desired key read every 300 s, the leaf's 120 s keepalive."""
    return replace(
        p, heartbeat=30.0, flush=60.0, rollup_span=60, desired_poll=300.0, leaf_ping=120.0
    )


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def dumps(run: WireRun) -> str:
    return json.dumps({**run.__dict__, "pacing": run.pacing.to_dict(), "per_day": run.per_day})


async def item_costs(dev: WireDevice, n: int = 40) -> dict[str, float]:
    """Bytes on the wire (both ways) of one of each thing a device sends, on this link: a
    heartbeat with its reply, a report of one rollup row with its PubAck, a rollup row
    inside a report of 60, a desired read finding nothing new, a PING/PONG pair."""
    store, nc = dev.store, dev.nc
    js = nc.jetstream(domain=dev.creds.js_domain)
    uplink = Uplink(store, js, dev.device_id, dev.link, report_link=False)
    store.set_upstream_span(60)

    async def summary() -> Heartbeat:
        return heartbeat_from_status(
            dev.device_id, await store.read(Store.status_summary), interval=30.0
        )

    beat = HeartbeatTask(nc, dev.device_id, dev.link, summary)
    down = Downlink(store, nc, js, dev.device_id, dev.link, lambda: None, report_link=False)
    out: dict[str, float] = {"ping_pair": await dev.ping_pair_bytes()}
    t0 = float(int(time.time() // 3600 * 3600)) - 10 * DAY

    async def measure(name: str, count: int, step: Any) -> None:
        await asyncio.sleep(0.3)
        a = sum(dev.counted())
        for i in range(count):
            await step(i)
        await asyncio.sleep(0.3)
        out[name] = (sum(dev.counted()) - a) / count

    async def one_beat(_: int) -> None:
        await beat.beat()

    minute = [0]

    async def one_row(_: int) -> None:
        now = t0 + minute[0] * 60.0
        minute[0] += 1
        for k in range(SAMPLES_PER_MINUTE):
            store.record_samples(now + k * 30.0, _values(minute[0], k))
        folding.roll_up(store, now + 60.0)
        await uplink.drain_once()

    async def sixty_rows(_: int) -> None:
        for _k in range(60):
            now = t0 + minute[0] * 60.0
            minute[0] += 1
            for k in range(SAMPLES_PER_MINUTE):
                store.record_samples(now + k * 30.0, _values(minute[0], k))
            folding.roll_up(store, now + 60.0)
        await uplink.drain_once()

    async def one_poll(_: int) -> None:
        await down.probe()

    await one_row(0)  # the first fold starts the watermarks
    await measure("heartbeat", n, one_beat)
    await measure("report_1_row", n, one_row)
    await measure("report_60_rows", max(2, n // 10), sixty_rows)
    out["row_in_batch"] = (out["report_60_rows"] - out["report_1_row"]) / 59
    await measure("desired_read", n, one_poll)
    return out
