"""Operator API round trip: `devices.list` of 1,000 devices against a real `signalbeam-hub run`.

Prints p50/p99 latency and sequential throughput for the API call, beside a baseline: a bare
NATS request/reply echo on the same nats-server (once with a tiny payload, once with a reply
as large as the API's), so the figure separates transport from hub work. Also the hub's RSS.

Also `devices.list` with `view: summary` (what the TUI's fleet table reads: desired,
running, deployment, containers, rollout, metric sparklines from an hour of minute rollups
per device) for one 500-device page and for 1,000 devices (two pages of 500, the summary
cap), beside the plain list of the same devices, with reply sizes.

    python -m bench.bench_api [--devices 1000] [--iterations 200] [--summary-iterations 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import nats
from nats.aio.msg import Msg

from hub.store import Store
from tests.harness.ports import free_port
from tests.harness.procs import ManagedProcess
from tui.client import HubClient


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, samples: list[float], extra: str = "") -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"{name:<34} p50 {percentile(ms, 0.50):7.2f} ms  p99 {percentile(ms, 0.99):7.2f} ms  "
        f"mean {statistics.fmean(ms):7.2f} ms  {len(ms) / (sum(samples) or 1):8.0f} req/s {extra}"
    )


async def timed(n: int, warmup: int, call: Callable[[], Awaitable[int]]) -> tuple[list[float], int]:
    size = 0
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        size = await call()
        samples.append(time.perf_counter() - start)
    return samples, size


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def seed(db: Path, devices: int) -> None:
    store = Store.open(db)
    try:
        store.create_group("lab")
        for i in range(devices):
            dev = f"dev-{i:05d}"
            store.upsert_device(
                dev,
                "acme",
                hostname=f"host-{i}",
                arch="arm64",
                os="linux",
                engine="podman",
                agent_version="0.1.0",
                tags=["rpi" if i % 2 else "x86", f"site-{i % 10}"],
            )
            if i % 3 == 0:
                store.add_to_group("lab", dev)
        seed_summary(store, devices)
    finally:
        store.close()


def seed_summary(store: Store, devices: int) -> None:
    """What the summary view reads: a reported state and an hour of host metric rollups
    (3 summary metrics + 1 other, 60 minutes) per device, as ingest stores them."""
    minute = int(time.time()) // 60 * 60
    ref = "warehouse-monitor@1.3.0"
    names = ("cpu.percent", "mem.percent", "disk.percent", "load.1")
    with store.tx():
        for i in range(devices):
            dev = f"dev-{i:05d}"
            boxes = [{"name": f"c{j}", "state": "running", "health": "healthy"} for j in range(4)]
            store.set_reported(
                dev,
                {
                    "deployment": {"status": "healthy", "bundle_ref": ref, "reason": ""},
                    "running": {"bundle_ref": ref, "generation": 1},
                    "observed": {"containers": boxes},
                },
            )
            store.put_metrics(
                "1m",
                dev,
                [(n, minute - 60 * k, 1.0, 20.0 + (i + k) % 50, 90.0) for n in names
                 for k in range(60)],
            )  # fmt: skip


async def measure(url: str, hub_url: str, key: str, args: argparse.Namespace) -> list[str]:
    lines = []
    async with HubClient(url, key, timeout=30) as client:

        async def devices_list() -> int:
            result = await client.call("devices.list", {"limit": 1000})
            assert len(result["items"]) == min(args.devices, 1000)
            return len(json.dumps(result))

        samples, size = await timed(args.iterations, args.warmup, devices_list)
        lines.append(summary("api devices.list (1,000 devices)", samples, f"reply {size} B"))

        async def devices_get() -> int:
            return len(json.dumps(await client.call("devices.get", {"id": "dev-00001"})))

        samples, size = await timed(args.iterations, args.warmup, devices_get)
        lines.append(summary("api devices.get", samples, f"reply {size} B"))

        async def pages(body: dict[str, Any], total: int) -> int:
            size, cursor, seen = 0, None, 0
            while True:
                result = await client.call(
                    "devices.list", {**body, **({"cursor": cursor} if cursor else {})}
                )
                size += len(json.dumps(result))
                seen += len(result["items"])
                cursor = result["next_cursor"]
                if cursor is None or seen >= total:
                    return size

        n_sum, w_sum = args.summary_iterations, min(args.warmup, 3)
        for total in (500, 1000):
            if total > args.devices:
                continue
            label = f"{total:,} devices" + (" (2 pages)" if total > 500 else "")
            for name, body in (
                ("plain", {"limit": 500}),
                ("summary", {"limit": 500, "view": "summary"}),
            ):
                samples, size = await timed(n_sum, w_sum, partial(pages, body, total))
                lines.append(
                    summary(f"api devices.list {name} {label}", samples, f"reply {size} B")
                )

    # Baseline: the same server, a responder doing no work (hub user: it may subscribe).
    nc = await nats.connect(hub_url)
    payloads = {"tiny": b"{}", "large": b"x" * size_of_list(lines)}

    async def echo(msg: Msg) -> None:
        await msg.respond(payloads[msg.subject.rsplit(".", 1)[1]])

    await nc.subscribe("bench.echo.*", cb=echo)
    try:
        for kind in payloads:

            async def bare(k: str = kind) -> int:
                return len((await nc.request(f"bench.echo.{k}", b"{}", timeout=30)).data)

            samples, size = await timed(args.iterations, args.warmup, bare)
            lines.append(summary(f"baseline NATS echo ({kind})", samples, f"reply {size} B"))
    finally:
        await nc.close()
    return lines


def hub_side(metrics: str) -> list[str]:
    """Mean time inside the hub per verb (from its own histogram), warm-up included."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        for suffix, into in (("_sum", sums), ("_count", counts)):
            head = f'signalbeam_api_request_seconds{suffix}{{verb="'
            if line.startswith(head):
                verb = line[len(head) :].split('"', 1)[0]
                into[verb] = float(line.rsplit(" ", 1)[1])
    return [
        f"{'hub-side mean ' + verb:<34} {sums[verb] / counts[verb] * 1000:7.2f} ms "
        "(dispatch + reply encoding, from /metrics)"
        for verb in sorted(sums)
        if counts.get(verb)
    ]


def size_of_list(lines: list[str]) -> int:
    return int(lines[0].rsplit("reply ", 1)[1].split()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--summary-iterations", type=int, default=30)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        data = Path(tmp) / "data"
        ports = [free_port() for _ in range(4)]
        init = subprocess.run(
            [
                sys.executable,
                "-m",
                "hub.cli",
                "init",
                "--data",
                str(data),
                "--json",
                "--client-port",
                str(ports[0]),
                "--leafnode-port",
                str(ports[1]),
                "--monitor-port",
                str(ports[2]),
                "--http-port",
                str(ports[3]),
                "--host",
                "127.0.0.1",
                "--http-host",
                "127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        info = json.loads(init.stdout)
        seed(data / "hub.db", args.devices)
        secrets = json.loads((data / "secrets.json").read_text())
        hub_url = f"nats://hub:{secrets['hub_password']}@127.0.0.1:{ports[0]}"
        proc = ManagedProcess(
            "hub",
            [sys.executable, "-m", "hub.cli", "run", "--data", str(data)],
            Path(tmp) / "hub.log",
        )
        try:
            import urllib.request

            def ready() -> bool:
                url = f"http://127.0.0.1:{ports[3]}/health/ready"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return bool(resp.status == 200)

            proc.wait_ready(ready, timeout=60)
            lines = asyncio.run(measure(info["operator_url"], hub_url, info["admin_key"], args))
            rss = rss_kib(proc.pid)
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[3]}/metrics", timeout=5) as r:
                lines += hub_side(r.read().decode())
        finally:
            code = proc.stop(timeout=30)
    print(
        f"bench_api: {args.devices} devices, {args.iterations} sequential requests per row "
        f"(+{args.warmup} warm-up), loopback, litestream on"
    )
    for line in lines:
        print("  " + line)
    print(f"  hub process RSS after the run: {rss / 1024:.1f} MiB (hub exit code {code})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
