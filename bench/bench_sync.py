"""Catch-up after a day offline, and upstream bytes per device per day, at default settings.

    python -m bench.bench_sync              # 24 h of default-rate data, 3 runs
    python -m bench.bench_sync --hours 72 --runs 1

Setup (all on 127.0.0.1): a hub nats-server (JetStream domain ``hub``, stream SB_REPORTS,
KV ``desired``), the agent's own supervised leaf server linked through a byte-counting TCP
proxy, and a real agent store. With the link cut, a simulated day of default-rate data is
written into the store: 1-minute rollups (1440 rows of the sampler's 12 host metrics plus 5
containers x 2) and events/observed snapshots at a busy-but-realistic rate. Heartbeats are
not queued offline, so they are not part of catch-up; their daily bytes are added to the
per-day figure separately (one every 30 s).

Figures: seconds from ``restore()`` to every row acknowledged by the hub stream (goal <= 5 s;
this includes noticing the link is back: leaf reconnect 1 s, probe every 1 s), the rate
once sending, and upstream bytes: report JSON payload, and wire bytes through the proxy with
the leaf link's S2 compression (the default the agent configures) and without it.
Baseline: the same rows published one message per row with raw ``js.publish_async`` straight
to the hub (no leaf, no batching).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from nats.js.api import KeyValueConfig, RePublish, StorageType, StreamConfig

from agent.metrics.folding import roll_up
from agent.metrics.sampler import HOST_METRICS
from agent.store import Store
from agent.sync.heartbeat import heartbeat_from_status
from agent.sync.leaf import LeafServer
from agent.sync.service import SyncService, SyncSettings
from protocol.enroll import EnrollReply
from protocol.subjects import (
    DESIRED_BUCKET,
    DESIRED_REPUBLISH_DEST,
    DESIRED_REPUBLISH_SRC,
    REPORT_STREAM,
    REPORT_WILDCARD,
)
from tests.harness.nats import NatsHub

CONTAINERS = [f"svc{i}" for i in range(5)]
EVENTS_PER_DAY = 400  # reconciles, health flips, restarts: a busy device
OBSERVED_PER_DAY = 48


class CountingProxy:
    """127.0.0.1 TCP proxy counting bytes each way; ``cut()`` drops and refuses connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0  # device -> hub
        self.down = 0
        self.is_cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if self.is_cut:
            w.close()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            w.close()
            return
        self._writers.update((w, uw))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(r, uw, True), pump(ur, w, False))
        self._writers.difference_update((w, uw))

    def cut(self) -> None:
        self.is_cut = True
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    def restore(self) -> None:
        self.is_cut = False

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


def fill_day(store: Store, hours: float, rng: random.Random) -> int:
    """Write ``hours`` of default-rate outbox data; returns rows written."""
    now = time.time()
    start = int(now - hours * 3600) // 60 * 60
    minutes = int(hours * 60)
    for m in range(minutes):
        values = {k: rng.uniform(0, 100) * (1e9 if "bytes" in k else 1) for k in HOST_METRICS}
        for c in CONTAINERS:
            values[f"container.{c}.cpu_percent"] = rng.uniform(0, 50)
            values[f"container.{c}.memory_bytes"] = rng.uniform(1e7, 5e8)
        store.record_samples(start + m * 60 + 1, values)
    roll_up(store, start + minutes * 60 + 1)
    for i in range(int(EVENTS_PER_DAY * hours / 24)):
        store.event(
            "container.health",
            f"container svc{i % 5} is healthy again",
            data={"container": f"svc{i % 5}", "health": "healthy", "previous": "starting"},
        )
    for i in range(int(OBSERVED_PER_DAY * hours / 24)):
        store.save_observed(
            [
                {
                    "name": f"app-{c}",
                    "service": c,
                    "state": "running",
                    "health": "healthy",
                    "image": f"registry.local/app/{c}:1.2.{i}",
                    "restart_count": i,
                }
                for c in CONTAINERS
            ]
        )
    return int(store.outbox_stats()["pending"])


async def one_run(tmp: Path, hours: float, compression: str, seed: int) -> dict[str, Any]:
    hub = NatsHub(tmp / "hub")
    proxy = CountingProxy(hub.leaf_port)
    await proxy.start()
    hub_nc = await nats.connect(hub.url)
    js = hub_nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=REPORT_STREAM,
            subjects=[REPORT_WILDCARD],
            storage=StorageType.FILE,
            duplicate_window=7200,
        )
    )
    await js.create_key_value(
        KeyValueConfig(
            bucket=DESIRED_BUCKET,
            history=5,
            direct=True,
            republish=RePublish(
                src=DESIRED_REPUBLISH_SRC, dest=DESIRED_REPUBLISH_DEST, headers_only=True
            ),
        )
    )
    # The hub listens to heartbeats; without interest the leaf would not forward them at all.
    heartbeats: list[int] = []

    async def on_heartbeat(msg: Any) -> None:
        heartbeats.append(len(msg.data))
        if msg.reply:  # as the hub's presence does: the device's "online" is this answer
            await msg.respond(b'{"v":1}')

    await hub_nc.subscribe("sb.dev.*.heartbeat", cb=on_heartbeat)
    store = Store.open(tmp / "agent.db", device_id="device-0001")
    creds = EnrollReply("device-0001", "x", "y", f"nats-leaf://127.0.0.1:{proxy.port}")
    svc = SyncService(
        store,
        SyncSettings("leaf", credentials=creds, workdir=tmp / "leaf"),
        "device-0001",
        trigger=lambda: None,
    )
    # Leaf settings are built inside start(); set compression through a subclass hook.
    orig_init = LeafServer.__init__

    def init(self: LeafServer, settings: Any) -> None:
        from dataclasses import replace

        orig_init(self, replace(settings, compression=compression))

    LeafServer.__init__ = init  # type: ignore[method-assign]
    try:
        await svc.start()
        deadline = time.monotonic() + 20
        while not svc.online and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        proxy.cut()
        while svc.online and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        rows = await asyncio.to_thread(fill_day, store, hours, random.Random(seed))
        hb_size = len(heartbeat_from_status("device-0001", store.status_summary()).to_json())
        pending_bytes = store.outbox_stats()["bytes"]
        up0 = proxy.up
        sent0 = svc.uplink.stats.bytes_sent  # type: ignore[union-attr]
        t0 = time.monotonic()
        proxy.restore()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if store.outbox_depth() == 0:
                break
            await asyncio.sleep(0.01)
        t_done = time.monotonic()
        info = await js.stream_info(REPORT_STREAM)
        # Let trailing protocol traffic (acks, pings) settle before reading the counters.
        await asyncio.sleep(0.5)
        catchup_wire = proxy.up - up0
        steady = await steady_state(svc, proxy)
        assert heartbeats, "no heartbeat reached the hub"
        return {
            **steady,
            "heartbeat_bytes": hb_size,
            "rows": rows,
            "drained": store.outbox_depth() == 0,
            "catchup_s": t_done - t0,
            "messages": info.state.messages,
            "row_payload_bytes": pending_bytes,
            "report_bytes": svc.uplink.stats.bytes_sent - sent0,  # type: ignore[union-attr]
            "wire_up_bytes": catchup_wire,
        }
    finally:
        LeafServer.__init__ = orig_init  # type: ignore[method-assign]
        await svc.stop()
        store.close()
        await hub_nc.close()
        await proxy.close()
        hub.stop()


async def steady_state(svc: SyncService, proxy: CountingProxy) -> dict[str, float]:
    """Online and idle: heartbeats and the desired-state probe at a compressed cadence (both
    every 30 s / 300 s by default) at 150x speed; wire bytes per heartbeat interval x 2880 =
    bytes per day (the leaf's own 2-minute PINGs are not sped up: a few kB a day)."""
    from dataclasses import replace

    assert svc.heartbeat is not None and svc.downlink is not None
    # Same 1:10 ratio as the defaults (heartbeat 30 s, desired safety-net read 300 s).
    svc.downlink.settings = replace(svc.downlink.settings, tick=0.05)
    svc.downlink._interval = 2.0
    svc.heartbeat.interval = 0.2
    await asyncio.sleep(0.5)
    up0, hb0, pr0 = proxy.up, svc.heartbeat.sent, svc.downlink.stats.probes
    await asyncio.sleep(4.0)
    beats = svc.heartbeat.sent - hb0
    probes = svc.downlink.stats.probes - pr0
    per_interval = (proxy.up - up0) / max(beats, 1)
    return {"idle_per_day": per_interval * 2880, "beats": beats, "probes": probes}


async def baseline(tmp: Path, hours: float, seed: int) -> dict[str, Any]:
    """One raw publish_async per row, straight to the hub: no leaf, no batching."""
    hub = NatsHub(tmp / "hub-base")
    nc = await nats.connect(hub.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=REPORT_STREAM, subjects=[REPORT_WILDCARD], duplicate_window=7200)
        store = Store.open(tmp / "base.db", device_id="device-0001")
        await asyncio.to_thread(fill_day, store, hours, random.Random(seed))
        rows = store.outbox_pending(limit=10**6, max_bytes=10**12)
        store.close()
        t0 = time.monotonic()
        futs = [
            await js.publish_async(
                "sb.dev.device-0001.report",
                r.payload_json.encode(),
                headers={"Nats-Msg-Id": f"device-0001:{r.seq}"},
            )
            for r in rows
        ]
        await asyncio.gather(*futs)
        dt = time.monotonic() - t0
        return {"rows": len(rows), "seconds": dt, "bytes": sum(r.size for r in rows)}
    finally:
        await nc.close()
        hub.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    results: dict[str, list[dict[str, Any]]] = {"s2_fast": [], "off": []}
    for i in range(args.runs):
        for mode in results:
            with tempfile.TemporaryDirectory(prefix="bench-sync-") as d:
                results[mode].append(asyncio.run(one_run(Path(d), args.hours, mode, seed=i)))
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as d:
        base = asyncio.run(baseline(Path(d), args.hours, seed=0))

    day = 24 / args.hours
    r0 = results["s2_fast"][0]
    print(
        f"simulated offline period: {args.hours:g} h -> {r0['rows']} outbox rows "
        f"({r0['row_payload_bytes'] / 1e3:.0f} kB of row payload), "
        f"{r0['messages']} report messages"
    )
    for mode, runs in results.items():
        assert all(r["drained"] for r in runs), f"{mode}: not drained"
        cat = [r["catchup_s"] for r in runs]
        wire = statistics.median(r["wire_up_bytes"] for r in runs) * day
        print(
            f"leaf compression {mode:8s}: catch-up after restore p50 {statistics.median(cat):.2f} s "
            f"(max {max(cat):.2f} s) "
            f"[goal <= 5 s]; wire up per day {wire / 1e6:.2f} MB"
        )
    report_day = statistics.median(r["report_bytes"] for r in results["off"]) * day
    wire_s2 = statistics.median(r["wire_up_bytes"] for r in results["s2_fast"]) * day
    idle_s2 = statistics.median(r["idle_per_day"] for r in results["s2_fast"])
    idle_off = statistics.median(r["idle_per_day"] for r in results["off"])
    print(
        f"report JSON payload per day: {report_day / 1e6:.2f} MB; heartbeat message "
        f"{r0['heartbeat_bytes']} B of JSON"
    )
    print(
        f"heartbeats (30 s) + desired safety-net reads (300 s) on the wire per day: "
        f"{idle_s2 / 1e6:.2f} MB with S2, {idle_off / 1e6:.2f} MB without"
    )
    print(
        f"upstream per device per day at defaults (S2 leaf link): rows {wire_s2 / 1e6:.2f} MB "
        f"+ heartbeats/probes {idle_s2 / 1e6:.2f} MB = {(wire_s2 + idle_s2) / 1e6:.2f} MB "
        f"[goal <= 2 MB]"
    )
    print(
        f"baseline: raw js.publish_async, one message per row, direct to hub: "
        f"{base['rows']} rows in {base['seconds']:.2f} s "
        f"({base['rows'] / base['seconds']:.0f} rows/s), {base['bytes'] / 1e6:.2f} MB payload"
    )


if __name__ == "__main__":
    main()
