"""Bytes per device day on the wire of a live device: defaults and metered, beside the old
behaviour measured in the same run.

    python -m bench.bench_wire_bytes                 # 1 device day per configuration
    python -m bench.bench_wire_bytes --days 2 --budget 100KB/day

Setup (all on 127.0.0.1): a real ``signalbeam-hub run``, one enrolled device whose real sync
parts (SQLite store, supervised leaf nats-server with S2 compression, uplink, heartbeat,
desired read) run in this process, the leaf dialling the hub through a counting TCP proxy.
Each configuration runs on its own fresh device and counts the TCP payload both ways on the
leaf socket. Time is accelerated, one step per device minute (tests/harness/wire.py): each
message crosses the link as it would live, not a catch-up replay. The leaf's keepalive is
measured per PING/PONG pair on the same link and added for a day at its interval.

Configurations:
- ``before``: the old behaviour (every rollup row sent alone the minute it is queued,
  heartbeat every 30 s, leaf ping 120 s), the same-run baseline;
- ``defaults``: the default pacing (``agent.sync.pacing.DEFAULT``);
- ``metered``: the pacing for ``--budget``.
A day has ``--events`` events (spread evenly), all of which must reach the hub.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from agent.sync.pacing import pacing_for
from protocol.metered import format_bytes, parse_budget
from tests.harness.sync_hub import SyncHub, enroll_device, event_seqs, new_token
from tests.harness.wire import (
    WireDevice,
    WireRun,
    item_costs,
    legacy_pacing,
    load_average,
    pacing_label,
    simulate,
)
from tui.client import HubClient


async def one(hub: SyncHub, admin: HubClient, work: Path, name: str, **kw: object) -> WireRun:
    creds = await enroll_device(hub, await new_token(admin), name)
    (work / name).mkdir()
    dev = WireDevice(work / name, creds, int(hub.ports["leafnode"]))
    await dev.start()
    try:
        run = await simulate(dev, label=name, event_kind=f"bench.{name}", **kw)  # type: ignore[arg-type]
    finally:
        await dev.stop()
    return run


async def breakdown(hub: SyncHub, admin: HubClient, work: Path) -> None:
    creds = await enroll_device(hub, await new_token(admin), "costs")
    (work / "costs").mkdir()
    dev = WireDevice(work / "costs", creds, int(hub.ports["leafnode"]))
    await dev.start()
    try:
        costs = await item_costs(dev)
    finally:
        await dev.stop()
    print("bytes on the wire, both ways, per item: " + ", ".join(
        f"{k} {v:.0f}" for k, v in costs.items()))  # fmt: skip


async def main_async(days: float, budget: int, events: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-wire-") as tmp:
        work = Path(tmp)
        hub = SyncHub(work / "hub")
        hub.start()
        try:
            async with HubClient(hub.url, hub.admin_key, timeout=60) as admin:
                await breakdown(hub, admin, work)
                defaults = pacing_for(None)
                metered = pacing_for(budget)
                runs = [
                    await one(
                        hub,
                        admin,
                        work,
                        "before",
                        pacing=legacy_pacing(defaults),
                        days=days,
                        events_per_day=events,
                        legacy=True,
                    ),
                    await one(
                        hub,
                        admin,
                        work,
                        "defaults",
                        pacing=defaults,
                        days=days,
                        events_per_day=events,
                    ),
                    await one(
                        hub,
                        admin,
                        work,
                        "metered",
                        pacing=metered,
                        days=days,
                        events_per_day=events,
                    ),
                ]
                print(f"load average at the end: {load_average()}")
                for r in runs:
                    for _ in range(600):  # bounded: 60 s for the hub to apply the last rows
                        got = event_seqs(hub, r.label, f"bench.{r.label}")
                        if len(got) >= r.events:
                            break
                        await asyncio.sleep(0.1)
                    exact = len(got) == len(set(got)) == r.events
                    print(
                        f"{r.label:9s} {format_bytes(r.per_day):>8s}/day"
                        f"  (up {format_bytes(r.up / days)}, down {format_bytes(r.down / days)}"
                        f" a day, keepalive {format_bytes(r.pings_per_day * r.ping_pair)} at"
                        f" {r.ping_pair:.0f} B a pair)"
                        f"  heartbeats {r.heartbeats / days:.0f}/day, reports"
                        f" {r.reports / days:.0f}/day, rows {r.rows / days:.0f}/day,"
                        f" events {r.events} delivered exactly once: {exact};"
                        f" estimate {format_bytes(r.pacing.estimate())}; {r.wall:.0f}s wall"
                    )
                    print(f"          {pacing_label(r.pacing)}")
                print(f"metered budget {format_bytes(budget)}/day")
        finally:
            hub.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--budget", default="100KB/day")
    ap.add_argument("--events", type=int, default=24, help="events per device day")
    a = ap.parse_args()
    asyncio.run(main_async(a.days, parse_budget(a.budget), a.events))


if __name__ == "__main__":
    main()
