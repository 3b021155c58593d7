"""Time from ``apply`` to all containers running, images already present, on each engine.

    python -m bench.bench_apply                 # 20 runs, 1- and 5-container bundles
    python -m bench.bench_apply --runs 50 --engines podman

For every engine present it starts a private engine and a loopback registry from
tests.harness, pulls the test image once, then repeats: store a new desired generation in the
real SQLite store, run one ``ReconcileLoop.reconcile_once`` (observe, plan, create, start,
journal, events) and stop the clock when it returns with every container running (checked).
Between runs an empty bundle is applied (not timed). The baseline beside it: the same
containers started with the docker CLI (``docker -H <engine socket> run -d``), which speaks
the same API to both engines. Prints p50/p99 (ms) for each. Goal: p50 <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from agent.reconcile.executor import ExecutorOptions
from agent.reconcile.loop import LoopOptions, ReconcileLoop
from agent.runtime import connect
from agent.store import Store
from bundles.model import BundleSpec, ContainerSpec, UpdatePolicy
from tests.harness.binaries import find_binary
from tests.harness.engines import (
    EngineHandle,
    docker_available,
    podman_available,
    start_docker,
    start_podman,
)
from tests.harness.ports import free_port
from tests.harness.registry import Registry

GOAL_P50_S = 1.0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def bundle(image: str, n: int, version: str) -> dict[str, Any]:
    return BundleSpec(
        "bench",
        version,
        tuple(
            ContainerSpec(f"web{i}", image, env=(("PORT", str(free_port())),), network_mode="host")
            for i in range(n)
        ),
        update=UpdatePolicy(health_window=60.0),
    ).to_dict()


async def time_apply(
    handle: EngineHandle, image: str, n: int, runs: int, work: Path
) -> list[float]:
    device = f"bench-{uuid.uuid4().hex[:6]}"
    store = Store.open(work / f"{device}.db", device_id=device)
    engine = connect(device, handle.url)
    loop = ReconcileLoop(
        engine, store, store.current_desired, device,
        LoopOptions(prune=False, executor=ExecutorOptions(stop_timeout=1.0)),
    )  # fmt: skip
    await engine.pull(image)
    out: list[float] = []
    try:
        for r in range(runs):
            spec = bundle(image, n, f"1.0.{r}")
            t0 = time.perf_counter()
            store.put_local_desired(spec)
            await loop.reconcile_once("desired")
            dt = time.perf_counter() - t0
            running = [c for c in await engine.list_containers() if c.state == "running"]
            if len(running) != n:
                raise RuntimeError(f"run {r}: {len(running)}/{n} running")
            out.append(dt)
            store.put_local_desired(None)  # clean up, untimed
            await loop.reconcile_once("desired")
    finally:
        store.put_local_desired(None)
        await loop.reconcile_once("cleanup")
        await engine.close()
        store.close()
    return out


def time_cli(handle: EngineHandle, image: str, n: int, runs: int) -> list[float]:
    docker = find_binary("docker")
    if docker is None:
        return []
    out: list[float] = []
    for _ in range(runs):
        ids: list[str] = []
        t0 = time.perf_counter()
        for _i in range(n):
            res = subprocess.run(
                [docker, "-H", handle.url, "run", "-d", "--network", "host",
                 "--label", "sbtest.owner=bench", "-e", f"PORT={free_port()}", image],
                capture_output=True, text=True, timeout=120, check=True,
            )  # fmt: skip
            ids.append(res.stdout.strip())
        out.append(time.perf_counter() - t0)
        subprocess.run(
            [docker, "-H", handle.url, "rm", "-f", *ids], capture_output=True, timeout=120
        )
    return out


def report(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<42} (not measured)"
    ms = [v * 1000 for v in values]
    return (
        f"{label:<42} p50 {pct(ms, 0.5):7.1f} ms   p99 {pct(ms, 0.99):7.1f} ms   "
        f"mean {statistics.fmean(ms):7.1f} ms   n={len(ms)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--engines", default="podman,docker")
    ap.add_argument("--sizes", default="1,5", help="containers per bundle")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="sb-bench-apply-"))
    registry = Registry(work / "registry")
    handles: list[EngineHandle] = []
    try:
        registry.push_test_images()
        image = registry.ref("sbtest/hello:1.0")
        wanted = args.engines.split(",")
        if "podman" in wanted and podman_available():
            handles.append(start_podman(work / "podman", registry.registries_conf))
        if "docker" in wanted and docker_available():
            handles.append(start_docker(work / "docker"))
        print(
            f"apply -> all running, images present; {args.runs} runs each; goal p50 <= {GOAL_P50_S}s"
        )
        for h in handles:
            for n in sizes:
                agent = asyncio.run(time_apply(h, image, n, args.runs, work))
                print(report(f"{h.kind}: agent apply, {n} container(s)", agent), flush=True)
                cli = time_cli(h, image, n, args.runs)
                print(report(f"{h.kind}: baseline docker CLI run -d x{n}", cli), flush=True)
    finally:
        for h in handles:
            h.stop()
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
