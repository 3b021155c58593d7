"""A device's whole idle footprint: the agent and its leaf nats-server, enrolled and linked.

    python -m bench.bench_agent_footprint                   # 30 s, Podman + 5 containers
    python -m bench.bench_agent_footprint --duration 300    # the issue's 5 minutes
    python -m bench.bench_agent_footprint --engine none     # agent core only, no engine
    python -m bench.bench_agent_footprint --no-hub          # not enrolled (no leaf, no sync)

The device (default): a real ``signalbeam-hub run`` on 127.0.0.1 and a registration token;
``signalbeam-agent enroll`` then ``run`` (its supervised leaf nats-server linked to the hub),
local HTTP API on, a 5-container bundle of ``sbtest/hello:1.0`` applied on a private Podman
(or dockerd) with the loopback registry from tests.harness. Measured once every container
runs and start-up has settled: the agent's and the leaf's RSS (mean/max), USS and PSS, CPU
(% of one core), and the device's footprint, agent RSS + leaf RSS, as one number.

Where it goes: the bare-interpreter RSS (the baseline), each module's RSS cost imported alone
and cumulatively in the agent's load order, and, from the running agent's own import log
(``-X importtime``), the RSS every package it really loaded costs, in load order, in a fresh
interpreter ("what stands in the way" of the goal). The leaf's link compression is chosen by
measurement: ``--leaf-modes`` starts a leaf per mode against a hub nats-server and sends the
same report-like messages through each, printing wire bytes, leaf RSS/USS idle and after,
and leaf CPU (a bare nats-server idle is the leaf's baseline).

After the idle window (with an engine) it also times `signalbeam-agent apply` to all
containers running, images present, p50/p99 over --apply-runs runs. Everything it starts is
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
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GOAL_RSS_MB = 40.0
GOAL_LEAF_MB = 20.0
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


def measure(pids: dict[str, int | None], duration: float, interval: float) -> dict[str, Any]:
    """RSS samples, USS/PSS at the end and CPU over the window for each named process."""
    import psutil

    procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid is not None}
    rss: dict[str, list[float]] = {name: [] for name in procs}
    t0 = time.monotonic()
    c0 = {name: sum(p.cpu_times()[:2]) for name, p in procs.items()}
    for _ in range(int(duration / interval) + 1):
        for name, p in procs.items():
            rss[name].append(p.memory_info().rss / 2**20)
        if time.monotonic() - t0 >= duration:
            break
        time.sleep(interval)
    wall = time.monotonic() - t0
    out: dict[str, Any] = {"seconds": wall, "samples": len(next(iter(rss.values()), []))}
    for name, p in procs.items():
        cpu = sum(p.cpu_times()[:2]) - c0[name]
        full = p.memory_full_info()  # USS/PSS: RSS minus (shares of) pages others also map
        out[name] = {
            "uss_mb": full.uss / 2**20,
            "pss_mb": getattr(full, "pss", 0) / 2**20,
            "rss_mean_mb": sum(rss[name]) / len(rss[name]),
            "rss_max_mb": max(rss[name]),
            "cpu_pct_one_core": 100.0 * cpu / wall if wall > 0 else 0.0,
        }
    return out


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


def enroll(hub: Any, config: Path, device_id: str) -> None:
    """``signalbeam-agent enroll`` with a fresh one-use token, as a field tech runs it."""
    import asyncio

    async def token() -> str:
        async with hub.client() as admin:
            tok = await admin.call("tokens.create", {"tenant": "bench", "max_uses": 1})
        return str(tok["token"])

    res = agent_cli(
        "enroll", "--config", str(config), "--hub", hub.enroll_url,
        "--token", asyncio.run(token()), "--device-id", device_id, "--json",
    )  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"enroll failed: {res.stderr}")


def linked(data: Path) -> bool:
    from agent.sync.status import read_status_file

    return bool((read_status_file(data) or {}).get("online"))


def leaf_pid(data: Path) -> int | None:
    try:
        return int((data / "leaf" / "leaf.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def loaded_modules(log: Path) -> list[str]:
    """The modules the running agent imported, in completion order (its -X importtime)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "package":
                out.append(name)
    return out


PACKAGE_RSS_SNIPPET = """
import importlib, sys
OWN = ('agent', 'protocol', 'bundles', 'sbutil')
def rss():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
def layer(name):
    top = name.split('.')[0]
    if top in OWN:
        return 2
    return 0 if top.lstrip('_') in sys.stdlib_module_names or top in sys.stdlib_module_names else 1
def group(name):
    parts = name.split('.')
    if parts[0] in OWN:
        return '.'.join(parts[:2])
    return ('stdlib ' if layer(name) == 0 else '') + parts[0].lstrip('_')
names = sys.stdin.read().split()
order, costs = [], {}
prev = rss()
# The standard library first, then third-party packages, then our own code: each layer's
# cost is what it adds on top of the ones below it, whatever imported it first. Third-party
# packages go whole, in the order their __init__ finished (dependencies first), so a
# package's submodule does not drag in another package's cost under its own name.
def key(name):
    return (layer(name), 1 if layer(name) == 1 and '.' in name else 0)
for name in sorted(names, key=key):
    if name in sys.modules:
        continue
    try:
        importlib.import_module(name)
    except Exception:
        continue
    now = rss()
    g = group(name)
    if g not in costs:
        order.append(g)
        costs[g] = 0.0
    costs[g] += now - prev
    prev = now
print(repr((order, costs, prev)))
"""


def package_costs(modules: list[str], baseline: float, top: int) -> None:
    """RSS of what the running agent loaded, by package, imported afresh: the standard
    library first, then each third-party package, then the agent's own packages."""
    res = subprocess.run(
        [sys.executable, "-c", PACKAGE_RSS_SNIPPET],
        input="\n".join(modules),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    if res.returncode != 0:
        print(f"package costs unavailable: {res.stderr.strip()[-300:]}")
        return
    order, costs, total = eval(res.stdout)  # our own repr() output
    print(
        f"\nwhat the running agent loaded ({len(modules)} modules), RSS by package imported "
        f"afresh (stdlib, then third-party, then ours): {baseline:.1f} MB bare -> {total:.1f} MB"
    )
    layers = (
        ("standard library", [g for g in order if g.startswith("stdlib ")]),
        ("third-party", [g for g in order if not g.startswith("stdlib ") and "." not in g]),
        ("ours", [g for g in order if "." in g and not g.startswith("stdlib ")]),
    )
    for title, groups in layers:
        total_layer = sum(costs[g] for g in groups)
        print(f"  {title}: +{total_layer:.1f} MB")
        biggest = set(sorted(groups, key=lambda g: -costs[g])[:top])
        for g in groups:
            if g in biggest and costs[g] >= 0.1:
                print(f"    {g.removeprefix('stdlib '):<26} +{costs[g]:5.2f} MB")


def run_agent_bench(args: argparse.Namespace, baseline: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="sb-bench-fp-"))
    started: list[Any] = []
    agent: subprocess.Popen[bytes] | None = None
    sys.path.insert(0, str(REPO))
    try:
        engine_url = f"unix://{work}/no-engine.sock"
        bundle_file: Path | None = None
        handle: Any = None
        if args.engine != "none":
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
        data = work / "data"
        http = f"port = {_free_port()}" if args.http else "enabled = false"
        config.write_text(
            f'data_dir = "{data}"\ndevice_id = "bench-footprint"\n'
            f'engine_socket = "{engine_url}"\n[http]\n{http}\n'
            f"[metrics]\ninterval = {args.metrics_interval}\n"
        )
        if args.hub:
            from tests.harness.sync_hub import SyncHub

            print("starting a hub and enrolling the device ...", flush=True)
            hub = SyncHub(work / "hub")
            started.append(hub)
            enroll(hub, config, "bench-footprint")
        log = (work / "agent.log").open("wb")
        # -X importtime only writes the import log (to stderr, the agent's log file here).
        agent = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "agent", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=REPO,
        )
        deadline = time.monotonic() + args.converge_timeout
        running = 0
        applied = False
        while time.monotonic() < deadline:
            if agent.poll() is not None:
                raise RuntimeError(f"agent exited early; see {work}/agent.log")
            done = not args.hub or linked(data)
            # Applied once linked: the hub's first desired revision (nothing assigned) then
            # comes before the local one, which as the newer revision wins.
            if bundle_file is not None and done and not applied:
                res = agent_cli("apply", str(bundle_file), "--config", str(config))
                if res.returncode != 0:
                    raise RuntimeError(f"apply failed: {res.stderr}")
                applied = True
            if bundle_file is not None:
                res = agent_cli("status", "--config", str(config), "--json")
                if res.returncode == 0:
                    cs = json.loads(res.stdout)["containers"]
                    running = sum(1 for c in cs if c.get("state") == "running")
                done = done and running >= args.containers
            if done:
                break
            time.sleep(1.0)
        else:
            raise RuntimeError(f"not converged: {running}/{args.containers} running, {work}")
        print(
            f"agent converged: {running} containers running"
            + (", enrolled, leaf linked to the hub" if args.hub else ", not enrolled"),
            flush=True,
        )
        # Let start-up work (first rollups, imports, engine connect) settle before measuring.
        time.sleep(args.settle)
        print(f"measuring idle device (agent pid {agent.pid}) for {args.duration:.0f} s ...")
        m = measure({"agent": agent.pid, "leaf": leaf_pid(data)}, args.duration, args.interval)
        what = (
            f"{args.containers}-container bundle on {args.engine}"
            if args.engine != "none"
            else "no engine (core loops only)"
        ) + (", local HTTP API on" if args.http else ", local HTTP API off")
        what += ", enrolled and linked" if args.hub else ", not enrolled"
        print(f"\nidle device, {what}, {m['seconds']:.0f} s, {m['samples']} samples:")
        a = m["agent"]
        print(
            f"  agent: RSS mean {a['rss_mean_mb']:.1f} MB, max {a['rss_max_mb']:.1f} MB "
            f"(goal <= {GOAL_RSS_MB:.0f} MB; bare python baseline {baseline:.1f} MB); "
            f"USS {a['uss_mb']:.1f} MB, PSS {a['pss_mb']:.1f} MB; "
            f"CPU {a['cpu_pct_one_core']:.2f} % of one core (goal <= {GOAL_CPU_PCT:.0f} %)"
        )
        leaf = m.get("leaf")
        if leaf is not None:
            print(
                f"  leaf nats-server: RSS mean {leaf['rss_mean_mb']:.1f} MB, max "
                f"{leaf['rss_max_mb']:.1f} MB (goal <= {GOAL_LEAF_MB:.0f} MB); USS "
                f"{leaf['uss_mb']:.1f} MB, PSS {leaf['pss_mb']:.1f} MB; CPU "
                f"{leaf['cpu_pct_one_core']:.2f} %"
            )
            total = a["rss_mean_mb"] + leaf["rss_mean_mb"]
            print(
                f"  device footprint (agent + leaf RSS): {total:.1f} MB "
                f"(goal <= {GOAL_RSS_MB + GOAL_LEAF_MB:.0f} MB); USS "
                f"{a['uss_mb'] + leaf['uss_mb']:.1f} MB"
            )
        print(f"  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        package_costs(loaded_modules(work / "agent.log"), baseline, args.top)
        if bundle_file is not None and args.apply_runs > 0:
            apply_latency(args, config, bundle_file, handle)
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


LEAF_MODES = ("off", "s2_fast", "s2_better", "s2_best")


def report_like(i: int, rng: Any) -> bytes:
    """A report-sized message of metric rows (numbers vary, keys repeat, as the agent's do)."""
    rows = [
        {
            "seq": i * 20 + j,
            "kind": "metrics.1m",
            "payload": {
                "cpu": {"min": round(rng.uniform(0, 100), 2), "avg": round(rng.uniform(0, 100), 3)},
                "mem": round(rng.uniform(20, 70), 3),
                "temp": round(rng.uniform(30, 80), 2),
                "at": 1_733_333_333.0 + rng.random() * 1e5,
            },
        }
        for j in range(20)
    ]
    return json.dumps({"device_id": "bench-leaf", "rows": rows}).encode()


def leaf_modes(messages: int) -> None:
    """The leaf per link compression mode: wire bytes vs leaf RSS vs leaf CPU, same traffic."""
    import asyncio
    import random
    import urllib.request

    import nats
    import psutil

    from agent.sync.leaf import LeafSettings, find_nats_server, render_config
    from bench.bench_sync import CountingProxy
    from tests.harness.nats import NatsHub

    def mem(pid: int) -> tuple[float, float]:
        full = psutil.Process(pid).memory_full_info()
        return full.rss / 2**20, full.uss / 2**20

    def cpu(pid: int) -> float:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)

    def spawn(mode: str | None, work: Path, hub_port: int) -> tuple[Any, int, int]:
        work.mkdir(parents=True, exist_ok=True)
        port, http = _free_port(), _free_port()
        conf = work / "leaf.conf"
        if mode is None:  # the baseline: a bare nats-server, no leafnode remote
            conf.write_text(f'listen: "127.0.0.1:{port}"\nhttp: "127.0.0.1:{http}"\n')
        else:
            s = LeafSettings("bench-leaf", work, f"nats-leaf://127.0.0.1:{hub_port}")
            conf.write_text(render_config(replace(s, compression=mode), port, work / "l.log", http))
        proc = subprocess.Popen(
            [find_nats_server(), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return proc, port, http

    async def one(hub: NatsHub, mode: str | None, work: Path) -> None:
        proxy = CountingProxy(hub.leaf_port)
        await proxy.start()
        proc, port, http = spawn(mode, work, proxy.port)
        try:
            for _ in range(200):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{http}/leafz", timeout=1) as r:
                        if mode is None or json.load(r).get("leafnodes"):
                            break
                except OSError:
                    pass
                await asyncio.sleep(0.05)
            await asyncio.sleep(3)
            idle = mem(proc.pid)
            if mode is None:
                print(
                    f"  {'bare nats-server (baseline)':<28} idle RSS {idle[0]:5.1f} USS {idle[1]:4.1f}"
                )
                return
            hub_nc = await nats.connect(hub.url)
            got = 0

            async def cb(_: Any) -> None:
                nonlocal got
                got += 1

            await hub_nc.subscribe("bench.leaf.>", cb=cb)
            await hub_nc.flush()
            nc = await nats.connect(f"nats://127.0.0.1:{port}")
            rng = random.Random(7)
            payloads = [report_like(i, rng) for i in range(messages)]
            up0, c0, t0 = proxy.up, cpu(proc.pid), time.monotonic()
            for i, body in enumerate(payloads):
                await nc.publish("bench.leaf.r", body)
                if i % 20 == 0:
                    await nc.flush()
            await nc.flush()
            while got < messages and time.monotonic() - t0 < 60:
                await asyncio.sleep(0.05)
            used, wire = cpu(proc.pid) - c0, proxy.up - up0
            await asyncio.sleep(3)
            after = mem(proc.pid)
            raw = sum(len(b) for b in payloads)
            await nc.close()
            await hub_nc.close()
            print(
                f"  {mode:<28} idle RSS {idle[0]:5.1f} USS {idle[1]:4.1f} | after RSS "
                f"{after[0]:5.1f} USS {after[1]:4.1f} | wire {wire / 1024:6.0f} KiB "
                f"({100 * wire / raw:5.1f} % of {raw / 1024:.0f} KiB) | CPU {used:5.2f} s"
            )
        finally:
            proxy.cut()  # ends the pumps before the loop does (no cancelled-task noise)
            proc.terminate()
            await asyncio.to_thread(proc.wait, 10)
            if proxy.server is not None:
                proxy.server.close()
            await asyncio.sleep(0.2)

    async def all_modes() -> None:
        work = Path(tempfile.mkdtemp(prefix="sb-bench-leaf-"))
        hub = NatsHub(work / "hub")
        try:
            print(f"\nleaf link compression, {messages} report-like messages through each:")
            await one(hub, None, work / "bare")
            for mode in LEAF_MODES:
                await one(hub, mode, work / mode)
        finally:
            hub.stop()
            shutil.rmtree(work, ignore_errors=True)

    asyncio.run(all_modes())


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
    p.add_argument(
        "--hub", action=argparse.BooleanOptionalAction, default=True, help="enroll to a hub"
    )
    p.add_argument("--top", type=int, default=14, help="packages listed by name")
    p.add_argument(
        "--leaf-modes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the leaf per link compression mode",
    )
    p.add_argument("--keep", action="store_true", help="keep the work dir for inspection")
    args = p.parse_args(argv)
    if not 0 < args.duration <= 3600 or not 0 < args.interval <= 60:
        p.error("--duration must be in (0, 3600] and --interval in (0, 60]")
    baseline = import_rss([])[0][1] if args.skip_imports else import_costs()
    if args.store_ops > 0:
        store_throughput(min(args.store_ops, 1_000_000))
    if args.leaf_modes:
        leaf_modes(2000)
    run_agent_bench(args, baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
