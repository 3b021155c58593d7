"""The scaling table of docs/performance.md "Hub workers": one command, every configuration.

    python -m bench.bench_fleet_scaling --preset box16     # the lent 16-core machine
    python -m bench.bench_fleet_scaling --preset try       # a few minutes on a 2-core box

Each configuration is one ``bench.bench_fleet_size`` run (a subprocess, so no state crosses
between them) stepping the simulated fleet up until a step fails (hub CPU >= 80 % of the
cores it was pinned to, heartbeat lag p99 >= 2 s, or the step did not settle). The hub's
processes (hub or workers, every nats-server node, litestream) are pinned to their cores
and the simulator and probe to the rest, so the simulator cannot take the hub's CPU:

- ``1 hub``: the one embedded hub on 2 cores (the baseline, run first);
- ``2 workers``: a 3-node nats-server cluster and 2 hub workers on 4 cores (2 per worker);
- ``4 workers``: the same with 4 workers on 8 cores.

The table closing the output gives each configuration's largest passing fleet, its figures
at that step, and its ratio to the baseline of the same invocation (the issue's target:
4 workers >= 3.5x one hub). Each row also gives the hub's CPU per device-minute, which
says what a step would cost where the simulator's cores, not the hub, ran out first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.sim.benchhub import loadavg, parse_cpus


@dataclass(frozen=True)
class Config:
    name: str
    workers: int
    nats_nodes: int
    hub_cpus: str  # for taskset-like "0-1"
    sim_cpus: str


PRESETS: dict[str, dict[str, Any]] = {
    # The lent machine: 16 cores. The simulator gets what the hub does not.
    "box16": {
        "configs": [
            Config("1 hub", 1, 1, "0-1", "2-15"),
            Config("2 workers", 2, 3, "0-3", "4-15"),
            Config("4 workers", 4, 3, "0-7", "8-15"),
        ],
        "steps": "20000,50000,100000,150000,200000,300000,400000",
        "args": ["--window", "15", "--ramp", "15", "--settle", "90", "--per-worker", "25000"],
    },
    # This 2-core box: proves the command, measures nothing worth a table.
    "try": {
        "configs": [
            Config("1 hub", 1, 1, "0", "1"),
            Config("2 workers", 2, 3, "0", "1"),
        ],
        "steps": "200,500",
        "args": ["--window", "5", "--ramp", "3", "--settle", "60", "--no-litestream"],
    },
}


def run_one(cfg: Config, steps: str, extra: list[str], out: Path, lifetime: float) -> list[Any]:
    cmd = [
        sys.executable, "-m", "bench.bench_fleet_size", "--steps", steps,
        "--workers", str(cfg.workers), "--nats-nodes", str(cfg.nats_nodes),
        "--hub-cpus", cfg.hub_cpus, "--sim-cpus", cfg.sim_cpus,
        "--lifetime", str(lifetime), "--json-out", str(out), *extra,
    ]  # fmt: skip
    print(f"\n=== {cfg.name}: {' '.join(cmd[2:])}", flush=True)
    # Bounded: the child bounds itself by --lifetime; this adds its set-up and tear-down.
    subprocess.run(cmd, check=False, timeout=lifetime + 600)
    if not out.exists():
        return []
    rows: list[Any] = json.loads(out.read_text())
    return rows


def table(results: dict[str, list[dict[str, Any]]], configs: list[Config]) -> str:
    lines = [
        "| configuration | hub cores | largest passing N | x baseline | hub CPU (% of its cores)"
        " | per device-minute, core-ms | lag p50 / p99 s | first failing step | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base_n = 0
    for cfg in configs:
        rows = results.get(cfg.name, [])
        cores = len(parse_cpus(cfg.hub_cpus))
        passing = [r for r in rows if r.get("pass")]
        failing = next((r for r in rows if not r.get("pass")), None)
        best = passing[-1] if passing else None
        n = int(best["n"]) if best else 0
        if cfg is configs[0]:
            base_n = n
        ratio = f"{n / base_n:.2f}" if base_n and n else "-"
        fail = f"{failing['n']}" if failing else "none failed (raise --steps)"
        if best is None:
            lines.append(f"| {cfg.name} | {cores} | 0 | - | - | - | - | {fail} | - |")
            continue
        lines.append(
            f"| {cfg.name} | {cores} | {n} | {ratio} | {best['hub_cpu'] / cores:.1f}"
            f" ({best['hub_split']}) | {best['ms_dev_min']:.3f} |"
            f" {best['p50']:.2f} / {best['p99']:.2f} | {fail} | {best['load']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="try")
    ap.add_argument("--steps", default="", help="override the preset's steps")
    ap.add_argument(
        "--only", default="", help="comma-separated configuration names to run (default: all)"
    )
    ap.add_argument(
        "--lifetime", type=float, default=900.0, help="bound on each configuration, seconds"
    )
    args = ap.parse_args()
    preset = PRESETS[args.preset]
    configs: list[Config] = preset["configs"]
    if args.only:
        wanted = {n.strip() for n in args.only.split(",")}
        configs = [c for c in configs if c.name in wanted]
    cpus = os.cpu_count() or 1
    needed = max(max(len(parse_cpus(c.hub_cpus)) for c in configs) + 1, 2)
    if cpus < needed:
        raise SystemExit(f"preset {args.preset} needs at least {needed} CPUs, this has {cpus}")
    print(f"machine: {cpus} cores; load average before: {loadavg()}", flush=True)
    started = time.monotonic()
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="sb-scaling-") as tmp:
        for i, cfg in enumerate(configs):
            out = Path(tmp) / f"config-{i}.json"
            steps = args.steps or preset["steps"]
            results[cfg.name] = run_one(cfg, steps, list(preset["args"]), out, args.lifetime)
    print(f"\nscaling table, same invocation, baseline first ({time.monotonic() - started:.0f} s;"
          f" load average now {loadavg()}):")  # fmt: skip
    print(table(results, configs))


if __name__ == "__main__":
    main()
