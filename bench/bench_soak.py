"""Soak: a real device over time. Does anything grow that should stay flat?

    python -m bench.bench_soak                       # 4 min of measuring, both engines (default)
    python -m bench.bench_soak --duration 3600       # the 60-minute run in docs/performance.md
    python -m bench.bench_soak --engines podman --csv /tmp/soak.csv

Setup (all on 127.0.0.1): a real ``signalbeam-hub run``, the loopback test registry, and for
each engine (private ``podman system service`` and ``dockerd`` from tests/harness) one real
``signalbeam-agent run`` enrolled to the hub with a token (its supervised leaf nats-server
linked through a cuttable proxy), local HTTP API on. Each device is assigned (from the hub) a
bundle of 5 ``sbtest/hello`` containers on host networking with short probes: exec every 1 s
and 2 s, http every 1 s, tcp every 2 s, and the image's own HEALTHCHECK (exec, 2 s). The
agents run accelerated: heartbeat every 1 s (30x the default), metrics every 1 s (10x),
reconcile every 5 s (12x), so an hour here is days of a device's probing and reporting.

In the middle: a hub rollout (assign 1.1.0) at 25 % of the run, the leaf link cut at 40 % for
10 % of the run (at most 2 min) and restored, a local apply (a field override, 1.2.0) at 60 %
and its clear (back to the hub's 1.1.0) at 75 %. Every change replaces all 5 containers.

Same-run baseline: on each engine, 5 containers of the same image started directly (no
agent, no probes), measured the same way.

Sampled every ``--sample`` seconds: agent RSS and USS, open FDs, threads; the agent's SQLite
file and WAL sizes and unsent outbox rows; engine processes per container (processes naming
the container id: conmon / the containerd shim, and any exec monitors) and exec sessions per
container (the engine's ExecIDs); the leaf nats-server's RSS; the engine daemon's RSS.
Printed per figure: first / last / max after warm-up (the first 10 minutes, or the first
third of a shorter run), the slope per hour by least squares over the samples after warm-up,
and a verdict against the goals (issue 13):

- engine processes per container <= 2 in steady state and not growing;
- agent RSS <= 40 MB and leaf RSS <= 20 MB; growth < 2 % per hour; FDs and threads flat;
- SQLite WAL bounded (checkpointed); outbox empty within one uplink retry (5 s) after the
  link is back.

Figures are a snapshot of one machine (print the load average beside them); nothing here is
asserted by a test.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from agent.sync.service import read_status_file
from bench.sim.benchhub import loadavg
from tests.harness.engines import (
    EngineHandle,
    docker_available,
    podman_available,
    run_cli,
    start_docker,
    start_podman,
)
from tests.harness.ports import free_port
from tests.harness.registry import Registry
from tests.harness.sync_e2e import Device
from tests.harness.sync_hub import SyncHub

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = 5
GOAL_AGENT_MB = 40.0
GOAL_LEAF_MB = 20.0
GOAL_GROWTH_PCT_H = 2.0
GOAL_ENGINE_PER_CONTAINER = 2.0
OUTBOX_DRAIN_GOAL_S = 5.0  # UplinkSettings.backoff_max: a restored link is noticed within it
BASELINE_LABEL = "sbtest.owner=soak-baseline"
MB = 2**20


# ---------------------------------------------------------------- the devices


def bundle_spec(registry: Registry, name: str, version: str, ports: list[int]) -> dict[str, Any]:
    """5 containers, one probe kind each; ``version`` changes an env value, so every change
    replaces every container."""
    probes: list[dict[str, Any] | None] = [
        {"type": "exec", "command": ["/bin/sh", "-c", 'test -n "$PORT"'], "interval": "1s"},
        {"type": "exec", "command": ["/bin/sh", "-c", "test -d /tmp/www"], "interval": "2s"},
        {"type": "http", "port": ports[2], "path": "/", "interval": "1s"},
        {"type": "tcp", "port": ports[3], "interval": "2s"},
        None,  # the image's own HEALTHCHECK (an exec every 2 s)
    ]
    containers = []
    for i, (port, probe) in enumerate(zip(ports, probes, strict=True)):
        c: dict[str, Any] = {
            "name": f"svc-{i}",
            "image": registry.ref("sbtest/hello:1.0"),
            "network_mode": "host",
            "env": {"PORT": str(port), "SOAK_VERSION": version},
        }
        if probe is not None:
            c["healthcheck"] = {**probe, "timeout": "2s", "retries": 3}
        containers.append(c)
    return {
        "bundle": name,
        "version": version,
        "containers": containers,
        "update": {"health_window": 60},
    }


class SoakDevice(Device):
    """An enrolled agent with the soak's accelerated intervals and its local API on."""

    def __init__(
        self, root: Path, kind: str, hub: SyncHub, engine: EngineHandle, token: str
    ) -> None:
        super().__init__(root, f"soak-{kind}", hub, engine, token, tags="soak")
        self.kind = kind
        self.ports = [free_port() for _ in range(CONTAINERS)]
        self.config.write_text(
            f'data_dir = "{self.data}"\ndevice_id = "{self.device_id}"\n'
            f'engine_socket = "{engine.url}"\n'
            '[reconcile]\ninterval = "5s"\n[metrics]\ninterval = "1s"\n'
            f'[http]\nport = {free_port()}\n[hub]\nheartbeat_interval = "1s"\n'
        )

    @property
    def bundle(self) -> str:
        return f"soak-{self.kind}"

    def agent_cli(self, *args: str) -> dict[str, Any]:
        res = subprocess.run(
            [sys.executable, "-m", "agent", *args, "--config", str(self.config), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        if res.returncode != 0:
            raise RuntimeError(f"agent {' '.join(args)}: {res.stderr.strip()}")
        out: dict[str, Any] = json.loads(res.stdout) if res.stdout.strip() else {}
        return out

    def leaf_pid(self) -> int | None:
        try:
            return int((self.data / "leaf" / "leaf.pid").read_text().strip())
        except (OSError, ValueError):
            return None


# ---------------------------------------------------------------- sampling


@dataclass
class Series:
    name: str
    unit: str
    goal: str = ""
    points: list[tuple[float, float]] = field(default_factory=list)

    def add(self, t: float, value: float | None) -> None:
        if value is not None:
            self.points.append((t, float(value)))


def proc_rss_uss(pid: int | None) -> tuple[float | None, float | None, int | None, int | None]:
    if pid is None:
        return None, None, None, None
    try:
        p = psutil.Process(pid)
        full = p.memory_full_info()
        return full.rss / MB, full.uss / MB, p.num_fds(), p.num_threads()
    except psutil.Error:
        return None, None, None, None


def outbox_pending(data: Path) -> int | None:
    try:
        conn = sqlite3.connect(f"file:{data / 'agent.db'}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return int(row[0])


def file_mb(path: Path) -> float:
    try:
        return path.stat().st_size / MB
    except OSError:
        return 0.0


def engine_process_counts(ids: list[str]) -> dict[str, int]:
    """Processes naming each container id on their command line: the engine's per-container
    monitor (conmon, or the containerd shim) and any exec monitors it keeps."""
    counts = dict.fromkeys(ids, 0)
    if not ids:
        return counts
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or ()
        for arg in cmdline:
            hit = next((cid for cid in ids if cid in arg), None)
            if hit is not None:
                counts[hit] += 1
                break
    return counts


def running_ids(engine: EngineHandle, label: str) -> list[str]:
    return [str(c["Id"]) for c in engine.containers(label, all_=False)]


def exec_sessions(engine: EngineHandle, ids: list[str]) -> int:
    from tests.harness.engines import _unix_request

    total = 0
    for cid in ids:
        status, body = _unix_request(engine.socket, "GET", f"/containers/{cid}/json", timeout=30)
        if status == 200:
            total += len(json.loads(body).get("ExecIDs") or [])
    return total


class Sampler:
    def __init__(self, devices: list[SoakDevice], engines: dict[str, EngineHandle]) -> None:
        self.devices = devices
        self.engines = engines
        self.series: dict[str, Series] = {}
        self.rows: list[dict[str, Any]] = []
        self.jsonl: str | None = None
        self.t0 = time.monotonic()

    def s(self, key: str, unit: str, goal: str = "") -> Series:
        if key not in self.series:
            self.series[key] = Series(key, unit, goal)
        return self.series[key]

    def sample(self) -> None:
        t = time.monotonic() - self.t0
        row: dict[str, Any] = {"t": round(t, 1), "load1": os.getloadavg()[0]}
        labels: dict[str, list[str]] = {}
        for d in self.devices:
            labels[d.device_id] = running_ids(d.engine, f"io.signalbeam.device={d.device_id}")
        for kind, eng in self.engines.items():
            labels[f"baseline-{kind}"] = running_ids(eng, BASELINE_LABEL)
        counts = engine_process_counts([cid for ids in labels.values() for cid in ids])
        for d in self.devices:
            k = d.kind
            rss, uss, fds, threads = proc_rss_uss(d.proc.pid if d.proc else None)
            leaf_rss, leaf_uss, _, _ = proc_rss_uss(d.leaf_pid())
            ids = labels[d.device_id]
            per = sum(counts[c] for c in ids) / len(ids) if ids else None
            values = {
                f"{k} agent RSS": (rss, "MB", f"<= {GOAL_AGENT_MB:.0f}"),
                f"{k} agent USS": (uss, "MB", ""),
                f"{k} agent FDs": (fds, "", "flat"),
                f"{k} agent threads": (threads, "", "flat"),
                f"{k} leaf RSS": (leaf_rss, "MB", f"<= {GOAL_LEAF_MB:.0f}"),
                f"{k} leaf USS": (leaf_uss, "MB", ""),
                f"{k} agent+leaf RSS": (
                    None if rss is None or leaf_rss is None else rss + leaf_rss,
                    "MB",
                    f"<= {GOAL_AGENT_MB + GOAL_LEAF_MB:.0f}",
                ),
                f"{k} SQLite file": (file_mb(d.data / "agent.db"), "MB", ""),
                f"{k} SQLite WAL": (file_mb(d.data / "agent.db-wal"), "MB", "bounded"),
                f"{k} outbox unsent rows": (outbox_pending(d.data), "", "drains"),
                f"{k} engine procs/container": (per, "", f"<= {GOAL_ENGINE_PER_CONTAINER:.0f}"),
                f"{k} exec sessions/container": (
                    exec_sessions(d.engine, ids) / len(ids) if ids else None,
                    "",
                    "",
                ),
            }
            for name, (value, unit, goal) in values.items():
                assert meta(name) == (unit, goal), name  # one definition for the CSV view
                self.s(name, unit, goal).add(t, value)
                row[name] = value
        for kind, eng in self.engines.items():
            ids = labels[f"baseline-{kind}"]
            per = sum(counts[c] for c in ids) / len(ids) if ids else None
            daemon_rss, _, _, _ = proc_rss_uss(eng.proc.pid)
            for name, value, unit in (
                (f"{kind} baseline engine procs/container", per, ""),
                (f"{kind} engine daemon RSS", daemon_rss, "MB"),
            ):
                self.s(name, unit).add(t, value)
                row[name] = value
        self.rows.append(row)
        if self.jsonl is not None:  # each sample as it is taken: a run cut short keeps them
            with open(self.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")


def meta(name: str) -> tuple[str, str]:
    """(unit, goal) of a figure, from its name (also for a table re-read from a CSV)."""
    goals = {
        "agent RSS": f"<= {GOAL_AGENT_MB:.0f}",
        "leaf RSS": f"<= {GOAL_LEAF_MB:.0f}",
        "agent+leaf RSS": f"<= {GOAL_AGENT_MB + GOAL_LEAF_MB:.0f}",
        "agent FDs": "flat",
        "agent threads": "flat",
        "SQLite WAL": "bounded",
        "outbox unsent rows": "drains",
    }
    unit = "MB" if name.endswith(("RSS", "USS", "SQLite file", "SQLite WAL")) else ""
    if name.endswith(" engine procs/container") and "baseline" not in name:
        return unit, f"<= {GOAL_ENGINE_PER_CONTAINER:.0f}"
    for suffix, goal in goals.items():
        if name.endswith(" " + suffix) and "daemon" not in name:
            return unit, goal
    return unit, ""


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    ts = [p[0] / 3600 for p in points]
    vs = [p[1] for p in points]
    mt, mv = statistics.fmean(ts), statistics.fmean(vs)
    den = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (v - mv) for t, v in zip(ts, vs, strict=True)) / den if den else 0.0


def verdict(series: Series, warm: list[tuple[float, float]]) -> str:
    """Level against the goal, and growth: MB figures by their slope (< 2 %/h), counts by
    the median of the last third of the samples against the first third (transients such as
    a probe's exec or a rollout's second container do not count as growth; a leak moves the
    median)."""
    if not warm:
        return "no data"
    vals = [v for _, v in warm]
    third = max(1, len(vals) // 3)
    early, late = statistics.median(vals[:third]), statistics.median(vals[-third:])
    mean = statistics.fmean(vals)
    growth = 100 * slope_per_hour(warm) / mean if mean else 0.0
    goal = series.goal
    # Memory: growth over the second half of the samples after warm-up, so a figure that
    # rises and then levels off (a cache filling to its bound) is told from one that keeps on.
    half = warm[len(warm) // 2 :]
    late_growth = 100 * slope_per_hour(half) / mean if mean and len(half) >= 3 else growth
    flat = late_growth < GOAL_GROWTH_PCT_H if series.unit == "MB" else late <= early
    if goal.startswith("<="):
        limit = float(goal.split()[1])
        # Engine processes: the goal is for steady state, so the median; memory: the mean.
        level = statistics.median(vals) if "procs" in series.name else mean
        return f"{'ok' if level <= limit else 'OVER'} / {'flat' if flat else 'GROWS'}"
    if goal == "flat":
        return "flat" if late <= early else "GROWS"
    if goal == "bounded":
        # A WAL file keeps its high-water size; bounded means it stopped growing.
        top_early, top_late = max(vals[:third]), max(vals[-third:])
        return "bounded" if top_late <= max(top_early * 1.1, top_early + 0.25) else "GROWS"
    return ""


def report(sampler: Sampler, warmup: float, drains: list[tuple[str, float, float | None]]) -> None:
    print(
        f"\n{'figure':38s} {'unit':>4s} {'first':>8s} {'last':>8s} {'max':>8s} "
        f"{'slope/h':>9s} {'%/h':>6s} {'2nd half':>8s}  {'goal':10s} verdict"
    )
    for name, series in sampler.series.items():
        warm = [p for p in series.points if p[0] >= warmup] or series.points
        if not warm:
            print(f"{name:38s} (no samples)")
            continue
        vals = [v for _, v in warm]
        slope = slope_per_hour(warm)
        mean = statistics.fmean(vals)
        pct = 100 * slope / mean if mean else 0.0
        half = warm[len(warm) // 2 :]
        pct2 = 100 * slope_per_hour(half) / mean if mean else 0.0
        print(
            f"{name:38s} {series.unit:>4s} {vals[0]:8.2f} {vals[-1]:8.2f} {max(vals):8.2f} "
            f"{slope:+9.3f} {pct:+6.1f} {pct2:+7.1f}%  {series.goal:10s} {verdict(series, warm)}"
        )
    for kind, online_s, drain_s in drains:
        drained = "never (within the bound)" if drain_s is None else f"{drain_s:.1f} s"
        ok = drain_s is not None and drain_s <= OUTBOX_DRAIN_GOAL_S
        print(
            f"{kind}: link restore -> online {online_s:.1f} s, online -> outbox empty {drained}"
            f" (goal <= {OUTBOX_DRAIN_GOAL_S:.0f} s): {'ok' if ok else 'SLOW'}"
        )


# ---------------------------------------------------------------- the run


async def wait_for(pred: Any, what: str, timeout: float) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.25)
    return time.monotonic() - t0


def all_running(d: SoakDevice, version: str) -> bool:
    cs = d.engine.containers(f"io.signalbeam.device={d.device_id}", all_=False)
    versions = [(c.get("Labels") or {}).get("io.signalbeam.version") for c in cs]
    return versions == [version] * CONTAINERS


def start_baseline(engine: EngineHandle, registry: Registry) -> None:
    """The same 5 containers, started by hand: what the engine costs with no agent."""
    for i in range(CONTAINERS):
        run_cli(
            engine,
            "run", "-d", "--name", f"soak-baseline-{engine.kind}-{i}",
            "--label", BASELINE_LABEL, "--network", "host",
            "-e", f"PORT={free_port()}", registry.ref("sbtest/hello:1.0"),
        )  # fmt: skip


async def run(args: argparse.Namespace, work: Path) -> None:
    registry = Registry(work / "registry")
    engines: dict[str, EngineHandle] = {}
    hub: SyncHub | None = None
    devices: list[SoakDevice] = []
    sampler: Sampler | None = None
    try:
        registry.push_test_images()
        for kind in args.engines:
            if kind == "podman" and podman_available():
                engines[kind] = start_podman(work / "podman", registry.registries_conf)
            elif kind == "docker" and docker_available():
                engines[kind] = start_docker(work / "docker")
            else:
                print(f"{kind}: not installed, skipped")
        if not engines:
            raise RuntimeError("no engine available")
        hub = SyncHub(work / "hub", grace=30)
        async with hub.client() as admin:
            tok = await admin.call("tokens.create", {"tenant": "soak", "max_uses": len(engines)})
            for kind, eng in engines.items():
                d = SoakDevice(work / "devices", kind, hub, eng, tok["token"])
                if d.enroll_result.returncode != 0:
                    raise RuntimeError(f"enroll {kind}: {d.enroll_result.stderr}")
                devices.append(d)
                d.start()
                start_baseline(eng, registry)
            for d in devices:
                await wait_for(d.online, f"{d.device_id} online", 90)
                for v in ("1.0.0", "1.1.0"):
                    spec = bundle_spec(registry, d.bundle, v, d.ports)
                    await admin.call("bundles.push", {"spec": spec})
                await admin.call(
                    "assign", {"target": f"device:{d.device_id}", "bundle": f"{d.bundle}@1.0.0"}
                )
            for d in devices:
                await wait_for(lambda d=d: all_running(d, "1.0.0"), f"{d.device_id} 1.0.0", 300)
            print(
                f"{len(devices)} devices enrolled, linked, {CONTAINERS} containers each "
                f"running; measuring {args.duration:.0f} s (load {loadavg()})",
                flush=True,
            )
            sampler = Sampler(devices, engines)
            if args.csv:
                sampler.jsonl = args.csv + ".jsonl"
            duration = args.duration
            cut_len = min(120.0, duration * 0.1)
            plan = [
                (0.25 * duration, "hub rollout: assign 1.1.0"),
                (0.40 * duration, "link cut"),
                (0.40 * duration + cut_len, "link restore"),
                (0.60 * duration, "local apply 1.2.0 (field override)"),
                (0.75 * duration, "local apply --clear (back to the hub's 1.1.0)"),
            ]
            drains: list[tuple[str, float, float | None]] = []
            changes: list[asyncio.Task[str]] = []
            next_sample = 0.0
            t0 = sampler.t0
            while (now := time.monotonic() - t0) < duration:
                if now >= next_sample:
                    sampler.sample()
                    next_sample = now + args.sample
                if plan and now >= plan[0][0]:
                    _, what = plan.pop(0)
                    print(f"  t={now:6.0f}s {what}", flush=True)
                    await action(what, devices, admin, registry, drains, changes)
                await asyncio.sleep(0.5)
            sampler.sample()
            for line in await asyncio.gather(*changes):
                print(line)
        print(f"\nload average at the end: {loadavg()} (2 cores, shared)")
        for d in devices:
            st = read_status_file(d.data) or {}
            up = st.get("uplink") or {}
            print(
                f"{d.device_id}: heartbeats sent {st.get('heartbeats_sent')}, "
                f"outbox rows sent {up.get('rows_sent')}, leaf restarts "
                f"{(st.get('leaf') or {}).get('restarts')}"
            )
        report(sampler, min(600.0, args.duration / 3), drains)
        if args.csv:
            with open(args.csv, "w", newline="") as f:
                keys = sorted({k for r in sampler.rows for k in r}, key=lambda k: (k != "t", k))
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(sampler.rows)
            print(f"samples: {args.csv}")
    finally:
        for d in devices:
            d.stop()
        if hub is not None:
            hub.stop()
        for eng in engines.values():
            eng.stop()
        registry.stop()


async def converged(d: SoakDevice, version: str, what: str) -> str:
    """How long until all 5 containers of ``version`` run (bounded), for the run's log."""
    try:
        took = await wait_for(lambda: all_running(d, version), f"{d.kind} {version}", 300)
    except TimeoutError:
        return f"{d.kind}: {what}: {version} NOT running on all {CONTAINERS} within 300 s"
    return f"{d.kind}: {what}: {version} running on all {CONTAINERS} after {took:.0f} s"


async def action(
    what: str,
    devices: list[SoakDevice],
    admin: Any,
    registry: Registry,
    drains: list[tuple[str, float, float | None]],
    changes: list[asyncio.Task[str]],
) -> None:
    target = {"hub rollout": "1.1.0", "local apply 1.2.0": "1.2.0", "local apply --clear": "1.1.0"}
    for prefix, version in target.items():
        if what.startswith(prefix):
            changes += [asyncio.create_task(converged(d, version, prefix)) for d in devices]
    if what.startswith("hub rollout"):
        for d in devices:
            await admin.call(
                "assign", {"target": f"device:{d.device_id}", "bundle": f"{d.bundle}@1.1.0"}
            )
    elif what == "link cut":
        for d in devices:
            d.cut()
    elif what == "link restore":
        for d in devices:
            d.restore()
        for d in devices:
            online_s = await wait_for(d.online, f"{d.device_id} back online", 120)
            t1 = time.monotonic()
            drain: float | None = None
            while time.monotonic() - t1 < 60:
                if outbox_pending(d.data) == 0:
                    drain = time.monotonic() - t1
                    break
                await asyncio.sleep(0.25)
            drains.append((d.kind, online_s, drain))
    elif what.startswith("local apply 1.2.0"):
        for d in devices:
            path = d.dir / "local-1.2.0.json"
            path.write_text(json.dumps(bundle_spec(registry, d.bundle, "1.2.0", d.ports)))
            d.agent_cli("apply", str(path))
    elif what.startswith("local apply --clear"):
        for d in devices:
            d.agent_cli("apply", "--clear")


def report_csv(path: str) -> None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    series: dict[str, Series] = {}
    for r in rows:
        t = float(r["t"])
        for name, value in r.items():
            if name in ("t", "load1") or value in ("", None):
                continue
            unit, goal = meta(name)
            series.setdefault(name, Series(name, unit, goal)).add(t, float(value))
    order = [
        "agent RSS", "agent USS", "agent FDs", "agent threads", "leaf RSS", "leaf USS",
        "agent+leaf RSS", "SQLite file", "SQLite WAL", "outbox unsent rows",
        "engine procs/container", "exec sessions/container", "baseline engine procs/container",
        "engine daemon RSS",
    ]  # fmt: skip

    def place(name: str) -> tuple[str, int]:
        kind, _, rest = name.partition(" ")
        return kind, order.index(rest) if rest in order else len(order)

    sampler = Sampler([], {})
    sampler.series = {name: series[name] for name in sorted(series, key=place)}
    duration = float(rows[-1]["t"]) if rows else 0.0
    loads = [float(r["load1"]) for r in rows]
    print(
        f"{path}: {len(rows)} samples over {duration:.0f} s; 1-min load average mean "
        f"{statistics.fmean(loads):.1f} (min {min(loads):.1f}, max {max(loads):.1f})"
    )
    report(sampler, min(600.0, duration / 3), [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=240.0, help="seconds measured (<= 4 h)")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--engines", default="podman,docker", help="comma-separated")
    ap.add_argument("--csv", help="write every sample to this CSV file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--report", metavar="CSV", help="print the table of an earlier run's CSV")
    args = ap.parse_args(argv)
    if args.report:
        report_csv(args.report)
        return 0
    if not 30 <= args.duration <= 4 * 3600 or not 1 <= args.sample <= 60:
        ap.error("--duration must be in [30, 14400] and --sample in [1, 60]")
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    work = Path(tempfile.mkdtemp(prefix="sb-bench-soak-"))
    print(f"work dir {work}; load average {loadavg()}", flush=True)
    try:
        asyncio.run(run(args, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
