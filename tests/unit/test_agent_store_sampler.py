"""The psutil sampler and metrics loop against a real store file."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from agent.config import MetricsConfig, OutboxConfig, RetentionConfig
from agent.metrics.sampler import HOST_METRICS, MetricsLoop, container_metrics, sample_host
from agent.store import Store


def test_sample_host_has_the_basics(tmp_path: Path) -> None:
    values = sample_host(tmp_path)
    for key in ("cpu.percent", "mem.percent", "mem.used_bytes", "disk.percent", "uptime.seconds"):
        assert key in values
    assert 0 <= values["disk.percent"] <= 100
    assert "disk.percent" not in sample_host(tmp_path / "missing")
    # HOST_METRICS names what it may report, in its order (the benches' stand-in devices).
    assert list(values) == [m for m in HOST_METRICS if m in values]


def test_container_metrics_flattens_and_skips_junk() -> None:
    out = container_metrics({"web": {"cpu_percent": 1.5, "memory_bytes": 10, "bad": float("nan")}})
    assert out == {"container.web.cpu_percent": 1.5, "container.web.memory_bytes": 10.0}


async def test_loop_samples_rolls_up_and_prunes(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "agent.db", device_id="dev-1")
    now = [9960.0]  # a minute boundary

    async def stats() -> Mapping[str, Mapping[str, float]]:
        return {"web": {"cpu_percent": 2.0, "memory_bytes": 1000}}

    loop = MetricsLoop(
        store,
        MetricsConfig(interval=10, retention=RetentionConfig(raw=120, minute=600, hour=86400)),
        OutboxConfig(),
        disk_path=tmp_path,
        container_stats=stats,
        clock=lambda: now[0],
    )
    for _ in range(30):  # five simulated minutes
        await loop.sample_once()
        now[0] += 10
    assert loop.samples_taken == 30
    minutes = store.metrics("1m", metric="container.web.cpu_percent")
    assert len(minutes) == 4 and all(p.count == 6 and p.avg == 2.0 for p in minutes)
    await loop.prune(now[0])
    raw = store.metrics("raw", metric="cpu.percent")
    assert raw and min(p.ts for p in raw) >= now[0] - 120
    store.close()


async def test_failing_container_stats_do_not_stop_host_metrics(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "agent.db", device_id="dev-1")

    async def broken() -> Mapping[str, Mapping[str, float]]:
        raise ConnectionError("engine went away")

    loop = MetricsLoop(
        store, MetricsConfig(), OutboxConfig(), disk_path=tmp_path, container_stats=broken
    )
    values = await loop.sample_once()
    assert "cpu.percent" in values
    assert store.latest_samples()
    store.close()


async def test_run_stops_promptly(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "agent.db", device_id="dev-1")
    loop = MetricsLoop(store, MetricsConfig(interval=0.05), OutboxConfig(), disk_path=tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    for _ in range(100):
        if loop.samples_taken >= 2:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert loop.samples_taken >= 2
    store.close()
