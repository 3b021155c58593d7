"""Assign -> container running on 3 real devices, end to end through the hub.

    python -m bench.bench_sync_e2e                 # 20 assignments (default)
    python -m bench.bench_sync_e2e --assignments 40

Setup (all on 127.0.0.1): a real ``signalbeam-hub run``, three real ``signalbeam-agent run``
processes (each with its supervised leaf nats-server linked to the hub), one private Podman
service and the test registry with ``sbtest/hello:1.0``/``2.0``. The devices are enrolled
with a token and put in group ``lab``; both versions are assigned once first, so the images
are cached and the figures measure sync + reconcile, not pulls.

Each measured round starts from devices running nothing (``unassign group:lab``, waited
for, not measured), assigns ``hello@1.0.0`` to ``group:lab`` and measures, per device:
- ``stored``: the API call until the agent has stored the new desired revision in its
  SQLite (the sync path alone: API commit, KV put, republished prompt through the leaf,
  direct get, store) — the baseline the rest is built on;
- ``running``: the API call until the engine lists the device's container of the new
  version as running (the whole path: sync, plan, stop old, create, start).
Polling: the agents' DBs and the engine every 10 ms. Goal: ``running`` p50 <= 1 s.

Before the agents start, the hub's ingest rate: ``--ingest-rows`` event rows (100 per report,
chained) published with a device's own credentials straight to the hub, timed from the first
publish until the hub's ``last_applied_seq`` reaches the last row (every row a hub event,
one SQLite transaction per fetch of 100 reports).

A few update rounds (1.0 <-> 2.0 on running devices) are measured too: there the old
container is stopped first, and the test image's httpd runs as PID 1 and ignores SIGTERM, so
the engine waits the agent's 10 s stop grace before killing it; those figures are the stop
grace plus the above, shown apart.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from protocol.report import MSG_ID_HEADER, ReportBatch
from protocol.subjects import JS_DOMAIN, report
from tests.harness.engines import EngineHandle, start_podman
from tests.harness.registry import Registry
from tests.harness.sync_e2e import Device, hello_spec
from tests.harness.sync_hub import (
    SyncHub,
    device_nc,
    enroll_device,
    event_rows,
)
from tui.client import HubClient

IDS = ("bench-1", "bench-2", "bench-3")
POLL = 0.01


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def stored_generation(dev: Device) -> int:
    try:
        conn = sqlite3.connect(f"file:{dev.data / 'agent.db'}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute("SELECT max(generation) FROM desired_revisions").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return -1
    return int(row[0] or 0)


def running_image(engine: EngineHandle, device: str) -> str | None:
    for c in engine.containers(f"io.signalbeam.device={device}", all_=False):
        if c.get("State") == "running":
            return str(c.get("Image"))
    return None


def settled(dev: Device) -> bool:
    """The agent finished applying its newest desired revision (healthy deployment)."""
    try:
        conn = sqlite3.connect(f"file:{dev.data / 'agent.db'}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute(
                "SELECT generation, status FROM deployments ORDER BY id DESC LIMIT 1"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return row is not None and row[1] == "healthy" and row[0] == stored_generation(dev)


async def until_idle(devices: list[Device], engine: EngineHandle, before: dict[str, int]) -> None:
    """After an unassign: every agent stored it, applied it, and has no container left."""
    deadline = time.monotonic() + 90
    while not all(
        stored_generation(d) > before[d.device_id]
        and settled(d)
        and not engine.containers(f"io.signalbeam.device={d.device_id}")
        for d in devices
    ):
        if time.monotonic() > deadline:
            raise TimeoutError("devices did not settle after unassign")
        await asyncio.sleep(0.1)


async def one_round(
    admin: HubClient, devices: list[Device], engine: EngineHandle, registry: Registry, version: str
) -> tuple[list[float], list[float]]:
    image = registry.ref(f"sbtest/hello:{version.rsplit('.', 1)[0]}")
    before = {d.device_id: stored_generation(d) for d in devices}
    t0 = time.perf_counter()
    await admin.call("assign", {"target": "group:lab", "bundle": f"hello@{version}"})
    stored: dict[str, float] = {}
    running: dict[str, float] = {}
    deadline = t0 + 120
    while len(running) < len(devices) or len(stored) < len(devices):
        now = time.perf_counter()
        if now > deadline:
            raise TimeoutError(f"round to {version} not done: stored {stored}, running {running}")
        for d in devices:
            if d.device_id not in stored and stored_generation(d) > before[d.device_id]:
                stored[d.device_id] = time.perf_counter() - t0
            if d.device_id not in running and running_image(engine, d.device_id) == image:
                running[d.device_id] = time.perf_counter() - t0
        await asyncio.sleep(POLL)
    # Not measured: let the deployment finish (health window) before the next change.
    while not all(settled(d) for d in devices):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"round to {version} did not settle")
        await asyncio.sleep(POLL * 5)
    return list(stored.values()), list(running.values())


async def ingest_rate(hub: SyncHub, admin: HubClient, rows: int) -> None:
    tok = await admin.call("tokens.create", {"tenant": "bench"})
    creds = await enroll_device(hub, tok["token"], "bench-ingest")
    nc = await device_nc(hub, creds)
    try:
        js = nc.jetstream(domain=JS_DOMAIN)
        prev, acks = 0, []
        t0 = time.perf_counter()
        for first in range(1, rows + 1, 100):
            b = ReportBatch("bench-ingest", tuple(event_rows(first, 100)), prev_seq=prev)
            acks.append(
                await js.publish_async(
                    report(b.device_id), b.to_json(), headers={MSG_ID_HEADER: b.msg_id}
                )
            )
            prev = b.last_seq
        await asyncio.gather(*acks)
        published = time.perf_counter() - t0
        while hub.query(
            "SELECT last_applied_seq FROM device_sync WHERE device_id = 'bench-ingest'"
        ) != [(prev,)]:
            await asyncio.sleep(POLL)
        total = time.perf_counter() - t0
    finally:
        await nc.close()
    print(
        f"ingest: {prev} event rows in {prev // 100} reports published in {published:.2f} s,"
        f" all applied {total:.2f} s after the first publish: {prev / total:,.0f} rows/s"
    )


async def run(assignments: int, work: Path, ingest_rows: int = 50_000) -> None:
    registry = Registry(work / "registry")
    engine: EngineHandle | None = None
    hub: SyncHub | None = None
    devices: list[Device] = []
    try:
        registry.push_test_images()
        engine = start_podman(work / "podman", registry.registries_conf)
        hub = SyncHub(work / "hub")
        async with HubClient(hub.url, hub.admin_key, timeout=15) as admin:
            if ingest_rows:
                await ingest_rate(hub, admin, ingest_rows)
            tok = await admin.call("tokens.create", {"tenant": "bench", "max_uses": len(IDS)})
            devices = [Device(work / "devices", d, hub, engine, tok["token"]) for d in IDS]
            for d in devices:
                assert d.enroll_result.returncode == 0, d.enroll_result.stderr
                d.start()
            await admin.call("groups.create", {"name": "lab"})
            for d in devices:
                await admin.call("groups.add", {"name": "lab", "device": d.device_id})
            for v in ("1.0.0", "2.0.0"):
                await admin.call("bundles.push", {"spec": hello_spec(registry, v)})
            deadline = time.monotonic() + 60
            while not all(d.online() for d in devices):
                if time.monotonic() > deadline:
                    raise TimeoutError("devices did not come online")
                await asyncio.sleep(0.1)
            # Warm-up: both versions once, so images are cached and containers exist.
            for v in ("1.0.0", "2.0.0"):
                await one_round(admin, devices, engine, registry, v)
            stored_all: list[float] = []
            running_all: list[float] = []
            fleet_running: list[float] = []
            for i in range(assignments):
                before = {d.device_id: stored_generation(d) for d in devices}
                await admin.call("unassign", {"target": "group:lab"})
                await until_idle(devices, engine, before)
                stored, running = await one_round(admin, devices, engine, registry, "1.0.0")
                stored_all += stored
                running_all += running
                fleet_running.append(max(running))
                print(
                    f"  round {i + 1:2d}: stored {max(stored) * 1000:5.0f} ms,"
                    f" running on all 3 {max(running) * 1000:5.0f} ms"
                )
            update_running: list[float] = []
            for v in ("2.0.0", "1.0.0", "2.0.0"):
                _, running = await one_round(admin, devices, engine, registry, v)
                update_running += running
        print()
        print(f"assign -> container running, {assignments} assignments x {len(IDS)} devices")
        print(f"{'figure':50s} {'p50':>8s} {'p99':>8s} {'max':>8s}")
        for name, vals in (
            ("baseline: desired stored on the device (s)", stored_all),
            ("container running, per device (s)", running_all),
            ("container running on all 3 (s)", fleet_running),
            ("update 1.0<->2.0, per device (s; 10 s stop grace)", update_running),
        ):
            print(f"{name:44s} {pct(vals, 50):8.3f} {pct(vals, 99):8.3f} {max(vals):8.3f}")
        print(f"mean running per device {statistics.mean(running_all):.3f} s; goal p50 <= 1 s")
    finally:
        for d in devices:
            d.stop()
        if hub is not None:
            hub.stop()
        if engine is not None:
            engine.stop()
        registry.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--assignments", type=int, default=20)
    ap.add_argument("--ingest-rows", type=int, default=50_000, help="0 skips the ingest figure")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-bench-e2e-"))
    try:
        asyncio.run(run(args.assignments, work, args.ingest_rows))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
