"""Agent idle footprint: RSS and CPU of a running ``signalbeam-agent``, and what imports cost.

    python -m bench.bench_agent_footprint                   # 30 s, Podman + 5 containers
    python -m bench.bench_agent_footprint --duration 300    # the issue's 5 minutes
    python -m bench.bench_agent_footprint --engine none     # agent core only, no engine

After the idle window (with an engine) it also times `signalbeam-agent apply` to all
containers running, images present, p50/p99 over --apply-runs runs.

Prints: bare-interpreter RSS (the baseline), each module's RSS cost imported alone and
cumulatively in the order the agent loads them, and the idle agent's RSS (mean/max) and CPU
(% of one core) over the measured window. With an engine it starts a private Podman (or
dockerd) and a loopback registry from tests.harness, applies a 5-container bundle of
``sbtest/hello:1.0`` and waits until all run before measuring. Everything it starts is
stopped by PID on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GOAL_RSS_MB = 40.0
GOAL_CPU_PCT = 1.0

# The order the running agent loads them in (cumulative view), then extras for reference.
AGENT_CHAIN = [
    "asyncio",
    "sqlite3",
    "agent.config",
    "agent.store",
    "psutil",
    "agent.metrics.sampler",
    "agent.daemon",
    "agent.runtime",
    "aiohttp",
    "aiodocker",
    "agent.runtime.docker_api",
    "agent.runtime.podman",
    "bundles",
    "agent.reconcile.loop",
    # Loaded only when their feature is on: the local HTTP API, hub sync.
    "agent.http.server",
    "agent.sync.service",
]
# Loaded only to migrate (sqlite_utils), by `apply` (yaml), or never (the docker SDK).
REFERENCE = [
    "sqlite_utils",
    "yaml",
    "nats",
    "docker",
    "prometheus_client",
]

RSS_SNIPPET = """
import importlib, sys
def rss():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
out = [('(start)', rss())]
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        out.append((name, rss()))
    except Exception as exc:
        out.append((name + ' (failed: ' + type(exc).__name__ + ')', rss()))
print(repr(out))
"""


def import_rss(modules: list[str]) -> list[tuple[str, float]]:
    res = subprocess.run(
        [sys.executable, "-c", RSS_SNIPPET, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    result: list[tuple[str, float]] = eval(res.stdout)  # our own repr() output
    return result


def import_costs() -> float:
    baseline = import_rss([])[0][1]
    print(f"baseline: bare python {sys.version.split()[0]} RSS = {baseline:.1f} MB")
    print("\nimport cost, each module alone in a fresh interpreter (RSS after import):")
    for name in AGENT_CHAIN + REFERENCE:
        (_, start), (label, after) = import_rss([name])
        print(f"  {label:<34} {after:6.1f} MB  (+{after - start:5.1f} MB)")
    print("\nimport cost, cumulative in the agent's load order:")
    prev = None
    for label, after in import_rss(AGENT_CHAIN):
        delta = "" if prev is None else f"(+{after - prev:5.1f} MB)"
        print(f"  {label:<34} {after:6.1f} MB  {delta}")
        prev = after
    return baseline


# ---------------------------------------------------------------- the running agent


def bundle_yaml(registry: Any, ports: list[int]) -> str:
    lines = [
        "bundle: footprint",
        "version: 1.0.0",
        "containers:",
    ]
    for i, port in enumerate(ports):
        lines += [
            f"  - name: hello-{i}",
            f"    image: {registry.ref('sbtest/hello:1.0')}",
            "    network_mode: host",
            "    env:",
            f'      PORT: "{port}"',
        ]
    return "\n".join(lines) + "\n"


def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60, cwd=REPO
    )


def store_throughput(n: int) -> None:
    """Commits per second of the store's write paths, on a real WAL file in a temp dir."""
    from agent.store import Store

    work = Path(tempfile.mkdtemp(prefix="sb-bench-store-"))
    try:
        store = Store.open(work / "agent.db", device_id="bench-store")
        t0 = time.perf_counter()
        for i in range(n):
            store.event("bench.tick", f"tick {i}", data={"i": i})
        events_s = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(n):
            store.record_samples(float(i), {"cpu.percent": 1.0, "mem.percent": 2.0})
        samples_s = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        drained = 0
        for _ in range(n):
            rows = store.outbox_pending(100, 256 * 1024)
            if not rows:
                break
            store.outbox_mark_sent(rows[-1].seq)
            drained += len(rows)
        drain_s = drained / (time.perf_counter() - t0)
        store.close()
        print(f"\nstore write paths, {n} operations each (WAL, synchronous=NORMAL):")
        print(f"  event() with its outbox row: {events_s:8.0f} commits/s")
        print(f"  record_samples() (2 values): {samples_s:8.0f} commits/s")
        print(f"  outbox drain (100-row pages + mark_sent): {drain_s:8.0f} rows/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(pid: int, duration: float, interval: float) -> dict[str, float]:
    import psutil

    proc = psutil.Process(pid)
    rss: list[float] = []
    t0 = time.monotonic()
    c0 = sum(proc.cpu_times()[:2])
    for _ in range(int(duration / interval) + 1):
        rss.append(proc.memory_info().rss / 2**20)
        if time.monotonic() - t0 >= duration:
            break
        time.sleep(interval)
    wall = time.monotonic() - t0
    cpu = sum(proc.cpu_times()[:2]) - c0
    full = proc.memory_full_info()  # USS/PSS: RSS minus (shares of) pages other processes use
    return {
        "uss_mb": full.uss / 2**20,
        "pss_mb": getattr(full, "pss", 0) / 2**20,
        "rss_mean_mb": sum(rss) / len(rss),
        "rss_max_mb": max(rss),
        "cpu_pct_one_core": 100.0 * cpu / wall if wall > 0 else 0.0,
        "seconds": wall,
        "samples": len(rss),
    }


def apply_latency(args: argparse.Namespace, config: Path, bundle: Path, handle: Any) -> None:
    """`signalbeam-agent apply` (a new process, as a field tech runs it) until the engine
    shows every container running; images present. Between runs `apply --nothing` clears
    the device (not timed)."""
    import statistics

    label = "io.signalbeam.device=bench-footprint"

    def running() -> int:
        return sum(1 for c in handle.containers(label) if c.get("State") == "running")

    def wait(pred: Any, what: str) -> None:
        deadline = time.monotonic() + args.converge_timeout
        while not pred():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def status() -> dict[str, Any]:
        res = agent_cli("status", "--config", str(config), "--json")
        return json.loads(res.stdout) if res.returncode == 0 else {}

    def settled(generation: int) -> bool:
        dep = status().get("deployment") or {}
        return dep.get("generation") == generation and dep.get("status") == "healthy"

    totals: list[float] = []
    cli_times: list[float] = []
    for _ in range(args.apply_runs):
        res = agent_cli("apply", "--nothing", "--config", str(config), "--json")
        if res.returncode != 0:
            raise RuntimeError("apply --nothing failed")
        # The test image's httpd ignores SIGTERM, so a graceful stop takes the full stop
        # timeout per container; the untimed reset force-removes them instead.
        handle.remove_test_containers()
        nothing = int(json.loads(res.stdout)["generation"])
        wait(lambda g=nothing: settled(g) and not handle.containers(label), "the device to settle")
        t0 = time.perf_counter()
        res = agent_cli("apply", str(bundle), "--config", str(config), "--json")
        t_cli = time.perf_counter() - t0
        if res.returncode != 0:
            raise RuntimeError(f"apply failed: {res.stderr}")
        wait(lambda: running() >= args.containers, "all containers running")
        totals.append(time.perf_counter() - t0)
        cli_times.append(t_cli)
        # Untimed: let the bundle pass its health gate, so it is the "previous healthy
        # version" whose images the pruner keeps when the next reset applies nothing.
        gen = int(json.loads(res.stdout)["generation"])
        wait(lambda g=gen: settled(g), "the bundle to be healthy")

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]

    print(
        f"\napply -> {args.containers} containers running on {args.engine}, images present, "
        f"{len(totals)} runs (new CLI process each time, SIGUSR1 nudge):"
    )
    print(
        f"  total  p50 {statistics.median(totals) * 1000:6.0f} ms  "
        f"p99 {pct(totals, 0.99) * 1000:6.0f} ms  (goal p50 <= 1000 ms)"
    )
    print(
        f"  of which the apply process itself: p50 {statistics.median(cli_times) * 1000:6.0f} ms "
        "(interpreter start, bundle validation, store commit)"
    )


def run_agent_bench(args: argparse.Namespace, baseline: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="sb-bench-fp-"))
    started: list[Any] = []
    agent: subprocess.Popen[bytes] | None = None
    try:
        engine_url = f"unix://{work}/no-engine.sock"
        bundle_file: Path | None = None
        if args.engine != "none":
            sys.path.insert(0, str(REPO))
            from tests.harness import engines
            from tests.harness.ports import free_port
            from tests.harness.registry import Registry

            print(f"\nstarting a private {args.engine} and a loopback registry ...", flush=True)
            registry = Registry(work / "registry")
            started.append(registry)
            registry.push_test_images()
            if args.engine == "podman":
                handle = engines.start_podman(work / "podman", registry.registries_conf)
            else:
                handle = engines.start_docker(work / "docker")
            started.append(handle)
            engine_url = handle.url
            bundle_file = work / "bundle.yaml"
            ports = [free_port() for _ in range(args.containers)]
            bundle_file.write_text(bundle_yaml(registry, ports))

        config = work / "agent.toml"
        http = f"port = {_free_port()}" if args.http else "enabled = false"
        config.write_text(
            f'data_dir = "{work}/data"\ndevice_id = "bench-footprint"\n'
            f'engine_socket = "{engine_url}"\n[http]\n{http}\n'
            f"[metrics]\ninterval = {args.metrics_interval}\n"
        )
        if bundle_file is not None:
            res = agent_cli("apply", str(bundle_file), "--config", str(config))
            if res.returncode != 0:
                raise RuntimeError(f"apply failed: {res.stderr}")
        log = (work / "agent.log").open("wb")
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=REPO,
        )
        if bundle_file is not None:
            deadline = time.monotonic() + args.converge_timeout
            running = 0
            while time.monotonic() < deadline:
                res = agent_cli("status", "--config", str(config), "--json")
                if res.returncode == 0:
                    cs = json.loads(res.stdout)["containers"]
                    running = sum(1 for c in cs if c.get("state") == "running")
                    if running >= args.containers:
                        break
                if agent.poll() is not None:
                    raise RuntimeError(f"agent exited early; see {work}/agent.log")
                time.sleep(1.0)
            else:
                raise RuntimeError(f"only {running}/{args.containers} containers running")
            print(f"agent converged: {running} containers running", flush=True)
        # Let start-up work (first rollups, imports, engine connect) settle before measuring.
        time.sleep(args.settle)
        print(f"measuring idle agent (pid {agent.pid}) for {args.duration:.0f} s ...", flush=True)
        m = measure(agent.pid, args.duration, args.interval)
        what = (
            f"{args.containers}-container bundle on {args.engine}"
            if args.engine != "none"
            else "no engine (core loops only)"
        ) + (", local HTTP API on" if args.http else ", local HTTP API off")
        print(f"\nidle agent, {what}, {m['seconds']:.0f} s, {m['samples']} samples:")
        print(
            f"  RSS mean {m['rss_mean_mb']:.1f} MB, max {m['rss_max_mb']:.1f} MB "
            f"(goal <= {GOAL_RSS_MB:.0f} MB; bare python baseline {baseline:.1f} MB)"
        )
        print(
            f"  at the end: USS {m['uss_mb']:.1f} MB, PSS {m['pss_mb']:.1f} MB "
            "(RSS includes shared library pages)"
        )
        print(f"  CPU {m['cpu_pct_one_core']:.2f} % of one core (goal <= {GOAL_CPU_PCT:.0f} %)")
        if bundle_file is not None and args.apply_runs > 0:
            apply_latency(args, config, bundle_file, started[-1])
    finally:
        if agent is not None and agent.poll() is None:
            os.kill(agent.pid, signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(agent.pid, signal.SIGKILL)
                agent.wait(timeout=10)
        for thing in reversed(started):
            try:
                thing.stop()
            except Exception as exc:
                print(f"cleanup: {exc}", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=30.0, help="seconds to measure (issue: 300)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between RSS samples")
    p.add_argument("--settle", type=float, default=5.0, help="seconds to wait before measuring")
    p.add_argument("--engine", choices=["podman", "docker", "none"], default="podman")
    p.add_argument("--containers", type=int, default=5)
    p.add_argument("--converge-timeout", type=float, default=180.0)
    p.add_argument("--skip-imports", action="store_true")
    p.add_argument("--store-ops", type=int, default=5000, help="0 skips the store figures")
    p.add_argument(
        "--metrics-interval", type=float, default=10.0, help="agent's metrics interval, seconds"
    )
    p.add_argument(
        "--apply-runs", type=int, default=20, help="apply->running runs after idle (0 skips)"
    )
    p.add_argument(
        "--http", action=argparse.BooleanOptionalAction, default=True, help="local HTTP API"
    )
    p.add_argument("--keep", action="store_true", help="keep the work dir for inspection")
    args = p.parse_args(argv)
    if not 0 < args.duration <= 3600 or not 0 < args.interval <= 60:
        p.error("--duration must be in (0, 3600] and --interval in (0, 60]")
    baseline = import_rss([])[0][1] if args.skip_imports else import_costs()
    if args.store_ops > 0:
        store_throughput(min(args.store_ops, 1_000_000))
    run_agent_bench(args, baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
