"""What the store's thread rule costs: a read or a write from the event loop through
``await store.read(...)`` / ``await store.write(...)`` (the store's own worker thread)
against the same call made directly on the loop and through ``asyncio.to_thread``.

    python -m bench.bench_store_thread                  # 2,000 calls per figure

Figures: microseconds per call for a small read (``outbox_depth``) and a small write
(``event``: one transaction with its outbox row), real SQLite in WAL on a temp dir, and the
longest the event loop went without running a 1 ms ticker while 200 writes ran each way (a
direct call blocks the loop for the whole transaction; the worker leaves it free).
Baseline (same run): the direct call. Load average printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.store import Store
from bench.sim.benchhub import loadavg


async def per_call(fn: Callable[[], Awaitable[object]], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - start) / n * 1e6


async def longest_stall(fn: Callable[[], Awaitable[object]], n: int) -> float:
    """The longest gap (ms) between two runs of a 1 ms ticker while ``fn`` runs ``n`` times."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    for _ in range(n):
        await fn()
        await asyncio.sleep(0)
    done.set()
    await tick
    return max(gaps, default=0.0) * 1000


async def run(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "agent.db", device_id="bench")

        async def direct_read() -> object:
            return store.outbox_depth()

        async def thread_read() -> object:
            return await asyncio.to_thread(store.outbox_depth)

        async def worker_read() -> object:
            return await store.read(Store.outbox_depth)

        async def direct_write() -> object:
            return store.event("bench.tick", "tick")

        async def thread_write() -> object:
            return await asyncio.to_thread(store.event, "bench.tick", "tick")

        async def worker_write() -> object:
            return await store.write(Store.event, "bench.tick", "tick")

        rows = [
            ("read  direct on the loop (baseline)", await per_call(direct_read, n)),
            ("read  asyncio.to_thread", await per_call(thread_read, n)),
            ("read  await store.read", await per_call(worker_read, n)),
            ("write direct on the loop (baseline)", await per_call(direct_write, n)),
            ("write asyncio.to_thread", await per_call(thread_write, n)),
            ("write await store.write", await per_call(worker_write, n)),
        ]
        m = min(n, 200)
        stalls = [
            ("write direct on the loop", await longest_stall(direct_write, m)),
            ("write await store.write", await longest_stall(worker_write, m)),
        ]
        store.close()
    print(f"calls per figure: {n}")
    for name, us in rows:
        print(f"{name:40s} {us:8.1f} us/call")
    for name, ms in stalls:
        print(f"longest loop stall, {name:24s} {ms:8.2f} ms ({m} writes)")
    print(f"load average: {loadavg()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    asyncio.run(run(max(1, min(args.calls, 100_000))))  # bounded


if __name__ == "__main__":
    main()
