"""Local HTTP API latency under load, and the agent's RSS before and after.

    python -m bench.bench_http                    # 50 clients, 2000 requests per endpoint
    python -m bench.bench_http --clients 50 --requests 5000 --time-cap 120

Starts a real ``signalbeam-agent`` process (``agent.daemon.Agent`` with the HTTP hook, no
container engine so the figures are the API's own) on a fresh data dir seeded with 24 h of
1-minute rollups for the sampler's metrics, then drives each endpoint with ``--clients``
concurrent loopback clients for a fixed request count (and a time cap), one endpoint after
the other:

- ``/health/live`` — the baseline: routing, middlewares, JSON, no auth, no store;
- ``/v1/status`` — bearer-token check plus the store's status summary;
- ``/v1/metrics?resolution=1m&since=-24h`` — 24 h of 1-minute rollups for every metric.

Prints p50/p99/max latency, throughput and error count per endpoint, and the agent's RSS
(and peak RSS) when idle before the load and after it. The agent is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent.metrics.sampler import HOST_METRICS

REPO = Path(__file__).resolve().parents[1]
COLD_REQUESTS = 20
DEVICE = "bench-http"
METRICS = HOST_METRICS


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(data_dir: Path, hours: int = 24) -> tuple[str, int]:
    """24 h of samples (one a minute per metric) rolled up; returns (token, points)."""
    from agent.http.tokens import TokenStore
    from agent.metrics.folding import roll_up
    from agent.store import Store

    now = time.time()
    store = Store.open(data_dir / "agent.db", device_id=DEVICE)
    try:
        start = now - hours * 3600
        for i in range(hours * 60):
            ts = start + i * 60
            store.record_samples(ts, {m: float((i * 7 + n) % 100) for n, m in enumerate(METRICS)})
        roll_up(store, now)
        points = len(store.metrics("1m", now - hours * 3600, None))
        # The outbox would hold these rollups for a hub; mark them sent, as on a synced device.
        store.outbox_mark_sent(10**12)
    finally:
        store.close()
    tokens = TokenStore.in_data_dir(data_dir)
    try:
        _, token = tokens.create("bench", "viewer", created_by="bench")
    finally:
        tokens.close()
    return token, points


def serve(data_dir: Path, port: int) -> int:
    """Child process: the agent (no engine) with the local API."""
    from agent.config import AgentConfig, HttpConfig
    from agent.daemon import Agent
    from agent.http.server import serve as http_hook

    cfg = AgentConfig(
        data_dir=data_dir,
        device_id=DEVICE,
        device_id_configured=True,
        http=HttpConfig(bind="127.0.0.1", port=port),
    )
    agent = Agent(cfg, connect_engine=False)
    agent.add_task(http_hook)
    asyncio.run(agent.run())
    return 0


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of ``pid`` in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def _load(
    url: str, headers: dict[str, str], clients: int, requests: int, time_cap: float
) -> tuple[list[float], int, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.monotonic() + time_cap
    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker() -> None:
            nonlocal errors, issued
            while issued < requests and time.monotonic() < deadline:
                issued += 1
                t0 = time.perf_counter()
                try:
                    async with session.get(url, headers=headers) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += 0 if ok else 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return latencies, errors, elapsed


async def _cold_metrics(url: str, headers: dict[str, str], n: int) -> list[float]:
    import aiohttp

    out = []
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            # A different minute each time: a different cache key, so a real build.
            since = int(time.time()) - 86400 - (i + 1) * 60
            t0 = time.perf_counter()
            path = f"/v1/metrics?resolution=1m&since={since}"
            async with session.get(url + path, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{path}: {resp.status}")
            out.append((time.perf_counter() - t0) * 1000)
    return out


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health/live", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("agent API did not come up")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=2000, help="per endpoint")
    ap.add_argument("--time-cap", type=float, default=60.0, help="seconds per endpoint")
    ap.add_argument("--serve", nargs=2, metavar=("DATA_DIR", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        return serve(Path(args.serve[0]), int(args.serve[1]))

    with tempfile.TemporaryDirectory(prefix="sb-bench-http-") as tmp:
        data_dir = Path(tmp)
        t0 = time.perf_counter()
        token, points = seed(data_dir)
        print(f"seeded 24 h of 1-minute rollups: {points} points ({time.perf_counter() - t0:.1f}s)")
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_http", "--serve", str(data_dir), str(port)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_ready(url, proc)
            time.sleep(2.0)  # let start-up work (first metrics sample, events) settle
            before, _ = rss_mb(proc.pid)
            print(f"agent pid {proc.pid}; RSS idle before load: {before:.1f} MB")
            auth = {"Authorization": f"Bearer {token}"}
            phases = [
                ("GET /health/live (baseline)", "/health/live", {}),
                ("GET /v1/status", "/v1/status", auth),
                (
                    "GET /v1/metrics?resolution=1m&since=-24h",
                    "/v1/metrics?resolution=1m&since=-24h",
                    auth,
                ),
            ]
            print(
                f"\n{args.clients} concurrent clients, up to {args.requests} requests and "
                f"{args.time_cap:.0f}s per endpoint, loopback, keep-alive"
            )
            print(
                f"{'endpoint':44} {'n':>6} {'err':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'req/s':>8} {'RSS MB':>7}"
            )
            for label, path, headers in phases:
                lat, errors, elapsed = asyncio.run(
                    _load(url + path, headers, args.clients, args.requests, args.time_cap)
                )
                ms = [x * 1000 for x in lat]
                print(
                    f"{label:44} {len(ms):6d} {errors:4d} {_pct(ms, 50):8.1f} {_pct(ms, 99):8.1f} "
                    f"{max(ms):8.1f} {len(ms) / elapsed:8.0f} {rss_mb(proc.pid)[0]:7.1f}"
                )
            # Rollup answers are cached ~5 s with single flight, so the loaded row above is
            # mostly cache hits; this row is the cost of building one (distinct windows).
            cold = asyncio.run(_cold_metrics(url, auth, COLD_REQUESTS))
            print(
                f"{'GET /v1/metrics 1m/24h, cache miss, 1 client':44} {len(cold):6d} {0:4d} "
                f"{_pct(cold, 50):8.1f} {_pct(cold, 99):8.1f} {max(cold):8.1f} "
                f"{1000 / statistics.mean(cold):8.0f} {rss_mb(proc.pid)[0]:7.1f}"
            )
            after, peak = rss_mb(proc.pid)
            print(
                f"\nagent RSS after load: {after:.1f} MB (peak during the run {peak:.1f} MB; "
                f"before {before:.1f} MB, +{after - before:.1f} MB)"
            )
            print(
                f"cores: {os.cpu_count()}, python {sys.version.split()[0]}; the load generator "
                "shares the machine with the agent"
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
