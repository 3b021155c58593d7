"""Direct mode (agent connects to the hub itself, no leaf) across a cut, and the leaf
supervisor's clean-up of a leaf a killed agent left running."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import nats
from nats.js.api import KeyValueConfig

from agent.store import Store
from agent.sync.downlink import DownlinkSettings
from agent.sync.leaf import LeafServer, LeafSettings, free_port
from agent.sync.service import SyncService, SyncSettings
from agent.sync.uplink import UplinkSettings
from protocol.desired import DesiredState
from protocol.enroll import EnrollReply
from protocol.report import decode_report
from protocol.subjects import DESIRED_BUCKET, REPORT_STREAM, REPORT_WILDCARD
from sbutil.tasks import cancel_and_wait, wait_for
from tests.harness.nats import NatsHub
from tests.harness.proxy import TcpProxy
from tests.harness.wait import eventually
from tests.integration.test_sync_agent import desired_bucket_config


async def test_direct_mode_across_a_cut(tmp_path: Path) -> None:
    hub = NatsHub(tmp_path / "hub")
    proxy = TcpProxy(hub.port)  # between the agent and the hub's client port
    hub_nc = await nats.connect(hub.url)
    js = hub_nc.jetstream()
    await js.add_stream(name=REPORT_STREAM, subjects=[REPORT_WILDCARD], duplicate_window=7200)
    kv = await js.create_key_value(desired_bucket_config())
    store = Store.open(tmp_path / "a.db", device_id="dev-3")
    settings = SyncSettings(
        "direct",
        url=f"nats://127.0.0.1:{proxy.port}",
        credentials=EnrollReply("dev-3", "u", "p", "nats-leaf://127.0.0.1:1"),
        uplink=UplinkSettings(idle_poll=0.1, backoff_max=1.0, ack_timeout=2.0),
        downlink=DownlinkSettings(liveness_interval=1.0, offline_probe=0.3, request_timeout=1.0),
    )
    triggered: list[int] = []
    svc = SyncService(store, settings, "dev-3", trigger=lambda: triggered.append(1))
    try:
        await svc.start()
        await eventually(lambda: svc.online)
        proxy.cut()
        await eventually(lambda: not svc.online)
        for i in range(20):
            store.event("test.offline", f"offline {i}")
        rev = await kv.put("dev-3", DesiredState(0, {"bundle": "b", "version": "2.0.0"}).to_json())
        proxy.restore()
        await eventually(lambda: store.outbox_depth() == 0)
        await eventually(
            lambda: (store.current_desired() or DesiredState(-1, None)).generation == rev
        )
        assert triggered
        # Every row reached the stream; resends (if any) were deduplicated by Nats-Msg-Id or
        # carry rows the hub already applied, which ingest skips by sequence.
        sub = await js.pull_subscribe(REPORT_WILDCARD, durable="check", stream=REPORT_STREAM)
        seqs: set[int] = set()
        for _ in range(20):
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except TimeoutError:
                break
            for m in msgs:
                seqs.update(r.seq for r in decode_report(m.data).rows)
                await m.ack()
        assert seqs == set(range(1, store.outbox_stats()["last_seq"] + 1))
    finally:
        await svc.stop()
        store.close()
        await hub_nc.close()
        proxy.close()
        hub.stop()


async def test_leftover_leaf_is_stopped_on_start(tmp_path: Path) -> None:
    settings = LeafSettings("dev-4", tmp_path / "leaf", f"nats-leaf://127.0.0.1:{free_port()}")
    first = LeafServer(settings)
    await first.start()
    pid = first.pid
    assert pid is not None
    # The agent "dies": its supervisor is gone but the server keeps running.
    assert first._task is not None
    first._task.cancel()
    second = LeafServer(settings)
    try:
        await second.start()
        await eventually(
            lambda: first.proc is not None and first.proc.returncode is not None, timeout=10
        )
        assert second.alive() and second.pid != pid
    finally:
        await second.stop()
        await first.stop()
    try:
        os.kill(pid, 0)
        raise AssertionError("leftover leaf still running")
    except ProcessLookupError:
        pass


async def test_hub_without_republish_falls_back_to_reading_often(tmp_path: Path) -> None:
    """A bucket without the republish (an older hub): puts reach a leaf device only through
    timed reads; the first one found unannounced switches to the fallback interval."""
    hub = NatsHub(tmp_path / "hub")
    hub_nc = await nats.connect(hub.url)
    js = hub_nc.jetstream()
    await js.add_stream(name=REPORT_STREAM, subjects=[REPORT_WILDCARD], duplicate_window=7200)
    kv = await js.create_key_value(KeyValueConfig(bucket=DESIRED_BUCKET, history=5, direct=True))
    store = Store.open(tmp_path / "a.db", device_id="dev-6")
    settings = SyncSettings(
        "leaf",
        credentials=EnrollReply("dev-6", "u", "p", f"nats-leaf://127.0.0.1:{hub.leaf_port}"),
        workdir=tmp_path / "leaf",
        downlink=DownlinkSettings(poll_interval=2.0, fallback_interval=0.3),
    )
    svc = SyncService(store, settings, "dev-6", trigger=lambda: None)
    try:
        await svc.start()
        assert svc.downlink is not None
        await eventually(lambda: svc.online and svc.downlink.stats.probes >= 1)
        doc = DesiredState(0, {"bundle": "b", "version": "1.0.0"}).to_json()
        rev = await kv.put("dev-6", doc)
        await eventually(lambda: svc.downlink.stats.last_revision == rev)
        # A put that lands while the first read after link-up is in flight is found by that
        # read, which is not a missed prompt; a second put, on a settled link, always is.
        rev = await kv.put("dev-6", doc)
        await eventually(lambda: svc.downlink.stats.last_revision == rev)
        assert svc.downlink.stats.missed_prompts >= 1
        assert svc.downlink._interval == 0.3
    finally:
        await svc.stop()
        store.close()
        await hub_nc.close()
        hub.stop()


async def test_stopping_a_leftover_leaf_does_not_block_the_event_loop(tmp_path: Path) -> None:
    """A leftover that ignores SIGTERM is waited for (LEFTOVER_WAIT, then SIGKILL) on the
    event loop: other tasks run meanwhile. It used to be a ``time.sleep`` loop in ``start``
    that stalled the whole agent for those seconds."""
    settings = LeafSettings("dev-5", tmp_path / "leaf", f"nats-leaf://127.0.0.1:{free_port()}")
    settings.workdir.mkdir(parents=True)
    leaf = LeafServer(settings)
    ready = tmp_path / "ready"
    # Stands in for a leaf nats-server left by a killed agent: our config on its command line.
    script = (
        "import signal, sys, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        f" pathlib.Path({str(ready)!r}).touch(); time.sleep(120)"
    )
    stray = await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(leaf.conf_path))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.05)

    other = asyncio.create_task(ticker())
    try:
        leaf.pid_path.write_text(f"{stray.pid}\n")
        await eventually(ready.exists, "the stand-in ignores SIGTERM", timeout=30)
        await asyncio.sleep(0)
        before = ticks
        await leaf._stop_leftover()
        assert ticks > before  # the loop ran the other task while the leftover was stopped
        assert await wait_for(stray.wait(), 30) == -signal.SIGKILL
    finally:
        await cancel_and_wait([other])
        if stray.returncode is None:
            stray.kill()
            await stray.wait()
