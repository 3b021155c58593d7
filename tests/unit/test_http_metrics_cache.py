"""The rollup answer cache: single flight, expiry, and a byte bound."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from agent.http.metrics_api import MetricsCache

Make = Callable[[], Awaitable[bytes]]


def const(body: bytes) -> Make:
    async def make() -> bytes:
        return body

    return make


async def test_concurrent_identical_requests_build_once() -> None:
    cache = MetricsCache(ttl=60)
    gate = asyncio.Event()

    async def make() -> bytes:
        await gate.wait()
        return b"body"

    tasks = [asyncio.create_task(cache.get(("1m", 0.0, None, None, 10), make)) for _ in range(20)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await asyncio.gather(*tasks) == [b"body"] * 20
    assert cache.builds == 1
    assert await cache.get(("1m", 0.0, None, None, 10), make) == b"body"
    assert cache.builds == 1


async def test_expiry_and_failures_are_not_cached() -> None:
    cache = MetricsCache(ttl=0)
    assert await cache.get(("1m", 0.0, None, None, 1), const(b"a")) == b"a"
    assert await cache.get(("1m", 0.0, None, None, 1), const(b"b")) == b"b"

    async def boom() -> bytes:
        raise RuntimeError("store down")

    cache = MetricsCache(ttl=60)
    with pytest.raises(RuntimeError):
        await cache.get(("1h", 0.0, None, None, 1), boom)
    assert await cache.get(("1h", 0.0, None, None, 1), const(b"ok")) == b"ok"


async def test_bytes_are_bounded() -> None:
    cache = MetricsCache(ttl=60, max_bytes=1000)
    for i in range(10):
        await cache.get(("1m", float(i), None, None, 1), const(b"x" * 300))
    assert cache.bytes <= 1000
    assert await cache.get(("1m", 99.0, None, None, 1), const(b"y" * 5000)) == b"y" * 5000
    assert cache.bytes <= 1000
