"""How many devices one hub holds: step the simulated fleet up at default intervals.

    python -m bench.bench_fleet_size                        # 200, 1000 devices (short)
    python -m bench.bench_fleet_size --steps 1000,5000,10000,20000,25000,30000,40000,50000,100000

A real ``signalbeam-hub run`` (127.0.0.1, litestream replicating to a local file replica
unless ``--no-litestream``) with ``max(steps)`` (or ``--seed-devices``) devices written by
the bulk path (bench/sim/benchhub.py). Each step brings ``N - previous`` more of them online in simulator
*worker processes* (``bench.sim.worker``, at most ``--per-worker`` devices each, shared
connections as the hub's user): heartbeats every ``--heartbeat`` s (30), a ``metrics.1m``
row every ``--rollup`` s (60), the new devices coming online evenly over ``--ramp`` s (one
heartbeat interval by default), as a fleet's reconnects spread out. This process only
measures: it has no simulated device in its event loop.

Per step:

1. ramp, then settle (at most ``--settle`` s): every new device online at the hub and in
   the workers, the workers' outboxes drained (at most one second of rollups queued), no
   new publish or desired-read failure for 5 s;
2. for ``--window`` s:

   - hub CPU: the hub process and its children (nats-server, litestream), % of one core;
   - simulator CPU: the worker processes, % of one core, apart (they share the 2 cores with
     the hub, so their cost is reported, not hidden); the probe (this process) apart;
     machine CPU (all processes, from /proc/stat) and what is left for other processes;
   - heartbeat -> visible lag: the probe publishes a heartbeat for a random online device
     on its own connection (the message a device sends) and polls ``devices.get`` every
     50 ms until the hub's record shows that ``ts`` or a newer one (4 probes in flight; a
     probe gives up at 10 s and counts as 10 s);
   - RSS of the hub (with its children) and of the workers;
   - DB growth: bytes in use at the window's ends, per device per day, extrapolated;
3. litestream lag (once per step): a group created through the API, then the replica
   restored to a temp file until it has it; the restore's own time is printed;
4. verdict: pass when hub CPU < 50 % of the machine (``--cores``, default the CPU count),
   lag p99 < 2 s and the step settled; a failing step prints what failed and stepping stops.

Pinned (``--hub-cpus 0 --sim-cpus 1``): the hub's processes (and their children) and the
simulator's workers and this probe are pinned to disjoint CPU sets (``sched_setaffinity``),
so the simulator cannot take the hub's CPU; the hub's CPU is then also reported as its share
of the cores it was given, and the CPU criterion is < 80 % of those cores.
``--workers N``: ``signalbeam-hub nats`` and N hub workers (``run --worker I/N``) instead of
the one hub (docs/architecture.md "Scale path"); report ingest and heartbeats (presence) are
split over them, the API and the offline sweep stay with the control-plane owner.

Baseline (same run): the idle hub (no device online) and the API round trip (``devices.get``
of a device, not polled for a change); the machine's load average is printed at every step.
``--profile DIR``: py-spy (if installed) records the hub for 20 s after each window into
``DIR/hub-<N>.txt`` (collapsed stacks).

``--flush S``: the simulated devices hold their rollups up to S seconds to share one report,
as the agent's default pacing does (``flush`` 600 s, agent/sync/pacing.py); without it each
rollup is its own report message (one per device-minute). Each step prints the hub's CPU
per device-minute (core-milliseconds: its CPU over the window / devices online / minutes)
and the report messages per second.

``--baseline REV``: two runs in one invocation, identical steps and simulator: first the hub
code of commit ``REV`` (``git archive`` into the work directory; its init, bulk seed and
``run``), then this tree's; a table of both closes the output (the same-run baseline for a
hub change).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import psutil

import hub as hub_pkg
from bench.sim.benchhub import BenchHub, BenchWorkersHub, CpuMeter, loadavg, parse_cpus, pct, pin
from bench.sim.model import AGENT_VERSION
from bench.sim.workers import SimWorkers
from protocol import natsauth
from protocol.heartbeat import Heartbeat
from protocol.subjects import heartbeat
from sbutil.tasks import wait_for
from tui.client import HubClient

PREFIX = "fl"
PROBE_TIMEOUT = 10.0
POLL_S = 0.05
PROBES_IN_FLIGHT = 4


class MachineCpu:
    """Busy share of the whole machine over a window, % of one core (all processes)."""

    def __init__(self) -> None:
        self.t0 = psutil.cpu_times()

    def percent(self) -> float:
        t1 = psutil.cpu_times()
        total = sum(t1) - sum(self.t0)
        idle = (t1.idle + getattr(t1, "iowait", 0.0)) - (
            self.t0.idle + getattr(self.t0, "iowait", 0.0)
        )
        return 100.0 * (psutil.cpu_count() or 1) * (total - idle) / max(1e-9, total)


def proc_name(p: psutil.Process) -> str:
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return str(p.pid)
    base = os.path.basename(cmd[0]) if cmd else str(p.pid)
    if not base.startswith("python"):
        return base
    if "--worker" in cmd:  # hub workers apart (--workers N)
        return f"hub worker {cmd[cmd.index('--worker') + 1]}"
    return "hub nats (python)" if "nats" in cmd else "hub (python)"


def split_meters(procs: list[psutil.Process]) -> dict[str, CpuMeter]:
    """One meter per process name: the nodes of a nats-server cluster count together."""
    by_name: dict[str, list[psutil.Process]] = {}
    for p in procs:
        by_name.setdefault(proc_name(p), []).append(p)
    return {
        name if len(ps) == 1 else f"{name} x{len(ps)}": CpuMeter(ps) for name, ps in by_name.items()
    }


def rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 1e6


async def probe_lag(admin: HubClient, nc: Any, online: int, rng: random.Random) -> float:
    device_id = f"{PREFIX}-{rng.randrange(online):06d}"
    t0 = time.perf_counter()
    ts = round(time.time(), 3)
    await nc.publish(heartbeat(device_id), Heartbeat(device_id, ts, AGENT_VERSION).to_json())
    while time.perf_counter() - t0 < PROBE_TIMEOUT:
        got = await admin.call("devices.get", {"id": device_id})
        seen = ((got.get("heartbeat") or {}).get("state") or {}).get("ts")
        # The device's own scheduled beat may overtake ours: a newer one shows ours arrived.
        if isinstance(seen, int | float) and seen >= ts:
            return time.perf_counter() - t0
        await asyncio.sleep(POLL_S)
    return PROBE_TIMEOUT


async def measure_lag(
    admin: HubClient, nc: Any, online: int, seconds: float, rng: random.Random
) -> list[float]:
    out: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            out.append(await probe_lag(admin, nc, online, rng))
            await asyncio.sleep(0.2)

    await asyncio.gather(*(worker() for _ in range(PROBES_IN_FLIGHT)))
    return out


async def litestream_lag(hub: BenchHub, admin: HubClient, name: str) -> tuple[float, float]:
    """(seconds until the replica has a new group, seconds of the last restore)."""
    t0 = time.perf_counter()
    await admin.call("groups.create", {"name": name})
    restore = 0.0
    while time.perf_counter() - t0 < 120:
        found, restore = await asyncio.to_thread(
            hub.replica_has, "SELECT 1 FROM groups WHERE name = ?", (name,)
        )
        if found:
            return time.perf_counter() - t0, restore
        await asyncio.sleep(0.2)
    return float("inf"), restore


async def profile(pid: int, out: Path, seconds: int) -> str:
    # The venv's bin is not on PATH when run as .venv/bin/python.
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
    if spy is None:
        return "py-spy not installed"
    proc = await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--duration", str(seconds), "--format", "raw",
        "--threads", "--nonblocking", "--output", str(out),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_for(proc.wait(), seconds + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
    return str(out)


def verdict(row: dict[str, Any], cores: int, hub_cores: int = 0) -> list[str]:
    why = []
    if hub_cores and row["hub_cpu"] >= 80 * hub_cores:
        why.append(f"hub CPU {row['hub_cpu']:.0f} % >= 80 % of its {hub_cores} pinned cores")
    if not hub_cores and row["hub_cpu"] >= 50 * cores:
        why.append(f"hub CPU {row['hub_cpu']:.0f} % >= {50 * cores} % of a core")
    if not row["p99"] < 2.0:
        why.append(f"lag p99 {row['p99']:.2f} s >= 2 s")
    if not row["settled"]:
        why.append(f"not settled in {row['settle_s']:.0f} s ({row['unsettled']})")
    return why


async def run(
    args: argparse.Namespace, work: Path, code_root: Path | None = None, label: str = ""
) -> list[dict[str, Any]]:
    steps = sorted(int(s) for s in args.steps.split(","))
    # More devices in the DB than ever come online: the idle part of a fleet costs the hub
    # too (litestream over a bigger DB, sweeps), so the figures depend on it.
    ids = [f"{PREFIX}-{i:06d}" for i in range(max(steps[-1], args.seed_devices))]
    cores = args.cores or os.cpu_count() or 1
    ramp = args.ramp if args.ramp >= 0 else args.heartbeat
    print(f"machine: {cores} cores, load average before: {loadavg()};"
          f" hub code {label or hub_commit()}", flush=True)  # fmt: skip
    t0 = time.perf_counter()
    hub_cpus, sim_cpus = parse_cpus(args.hub_cpus), parse_cpus(args.sim_cpus)
    if hub_cpus & sim_cpus:
        raise SystemExit("--hub-cpus and --sim-cpus must not overlap")
    hub: BenchHub
    init_flags = ("--nats-auth", args.nats_auth, *(("--cluster",) if args.nats_nodes == 3 else ()))
    if args.workers > 1:
        hub = BenchWorkersHub(
            work / "hub",
            workers=args.workers,
            seed_devices=ids,
            litestream=args.litestream,
            init_flags=init_flags,
            code_root=code_root,
        )
    else:
        hub = BenchHub(
            work / "hub",
            seed_devices=ids,
            litestream=args.litestream,
            init_flags=init_flags,
            code_root=code_root,
        )
    if hub_cpus:
        pin(hub.processes(), hub_cpus)
    if sim_cpus:
        pin([psutil.Process()], sim_cpus)  # the probe, and the simulator it starts
    print(f"hub: {'one hub' if args.workers <= 1 else f'{args.workers} workers + nats'}"
          f" ({args.nats_nodes} nats-server node{'s' if args.nats_nodes > 1 else ''}),"
          f" nats_auth {args.nats_auth};"
          f" pinned hub to CPUs {sorted(hub_cpus) or 'any'}, simulator and probe to"
          f" {sorted(sim_cpus) or 'any'}")  # fmt: skip
    print(f"bulk seed of {len(ids)} devices: {hub.seed_seconds:.2f} s;"
          f" hub ready {time.perf_counter() - t0:.1f} s after init")  # fmt: skip
    rng = random.Random(1)
    me = psutil.Process()
    workers = SimWorkers(
        hub.client_url, "hub", hub.secret("hub_password"), log_dir=work, prefix=PREFIX,
        heartbeat_s=args.heartbeat, rollup_s=args.rollup, flush_s=args.flush,
        per_worker=args.per_worker,
        connections=args.connections, lifetime_s=args.lifetime,
    )  # fmt: skip
    results: list[dict[str, Any]] = []
    bench_deadline = time.monotonic() + args.lifetime
    secret = hub.secret("hub_password")  # a bearer JWT on a JWT-mode hub
    login = natsauth.auth_options("", secret) or {"user": "hub", "password": secret}
    nc = await nats.connect(hub.client_url, name="sb-bench-probe", **login)
    try:
        async with HubClient(hub.url, hub.admin_key, timeout=30) as admin:
            # Baselines: the idle hub, and one API round trip.
            cpu, mach = CpuMeter(hub.processes()), MachineCpu()
            idle_split = split_meters(hub.processes())
            await asyncio.sleep(min(10.0, args.window))
            idle_cpu, idle_mach = cpu.percent(), mach.percent()
            split_txt = ", ".join(f"{k} {m.percent():.1f}" for k, m in idle_split.items())
            rtt = []
            for _ in range(50):
                a = time.perf_counter()
                await admin.call("devices.get", {"id": ids[0]})
                rtt.append(time.perf_counter() - a)
            # litestream's start-up snapshot and first compaction (a whole copy of the DB
            # each) fall in this window: its idle cost a minute later is a tenth of this.
            print(f"baseline: idle hub CPU {idle_cpu:.1f} % of a core ({split_txt}; machine"
                  f" {idle_mach:.0f} % of a core), hub RSS {rss_mb(hub.processes()):.0f} MB; devices.get round"
                  f" trip p50 {pct(rtt, 50) * 1000:.1f} ms p99 {pct(rtt, 99) * 1000:.1f} ms;"
                  f" load {loadavg()}", flush=True)  # fmt: skip
            online = 0
            for n in steps:
                if time.monotonic() > bench_deadline:
                    print(f"N={n}: not run (--lifetime {args.lifetime:g} s reached)")
                    break
                t_start = time.monotonic()
                await workers.add(online, n - online, ramp_s=ramp)
                online = n
                await asyncio.sleep(ramp)

                async def hub_online(n: int = n) -> bool:
                    q = "SELECT count(*) FROM devices WHERE status = 'online'"
                    got = await asyncio.to_thread(hub.query, q)
                    return int(got[0][0]) >= n

                # Rows held back by --flush are expected, not a backlog (a device's share of
                # rollups for up to one flush interval).
                lingering = int(n * args.flush / args.rollup) if args.flush else 0
                settled, unsettled, settle_s = await workers.settle(
                    n, args.settle, backlog_max=max(100, int(n / args.rollup)) + lingering,
                    hub_check=hub_online,
                )  # fmt: skip
                settle_s += ramp
                if args.warmup:
                    # Past the start-up traffic (first reports, desired reads and applies):
                    # the window then sees the steady rates.
                    await asyncio.sleep(args.warmup)
                sim_procs = workers.processes()
                hub_procs = hub.processes()
                hub_cpu, sim_cpu = CpuMeter(hub_procs), CpuMeter(sim_procs)
                split = split_meters(hub_procs)
                probe_cpu, mach = CpuMeter([me]), MachineCpu()
                before = workers.totals()
                db0, w0 = hub.db_bytes(), time.monotonic()
                lags = await measure_lag(admin, nc, n, args.window, rng)
                db1, w1 = hub.db_bytes(), time.monotonic()
                hc, sc, pc, mc = hub_cpu.percent(), sim_cpu.percent(), probe_cpu.percent(), mach.percent()  # fmt: skip
                after = workers.totals()
                row: dict[str, Any] = {
                    "n": n, "hub_cpu": hc, "sim_cpu": sc, "probe_cpu": pc, "machine_cpu": mc,
                    "other_cpu": max(0.0, mc - hc - sc - pc),
                    "hub_split": ", ".join(f"{k} {m.percent():.1f}" for k, m in split.items()),
                    "hub_rss": rss_mb(hub.processes()), "sim_rss": rss_mb(sim_procs),
                    "p50": pct(lags, 50), "p99": pct(lags, 99),
                    "max": max(lags) if lags else float("nan"), "probes": len(lags),
                    "timeouts": sum(1 for x in lags if x >= PROBE_TIMEOUT),
                    "growth_kb": (db1 - db0) / (w1 - w0) * 86400 / n / 1024, "db_mb": db1 / 1e6,
                    "settled": settled, "unsettled": unsettled, "settle_s": settle_s,
                    "backlog": after["backlog_rows"],
                    "fail": after["publish_failures"] - before["publish_failures"],
                    "rows_s": (after["rows"] - before["rows"]) / (w1 - w0),
                    "msgs_s": (after["batches"] - before["batches"]) / (w1 - w0),
                    # core-ms of the hub per device per minute online: what a device costs.
                    "ms_dev_min": hc / 100 * 60 * 1000 / n,
                    "beats_s": (after["heartbeats"] - before["heartbeats"]) / (w1 - w0),
                    "load": loadavg(),
                }  # fmt: skip
                if args.litestream:
                    row["ls_lag"], row["ls_restore"] = await litestream_lag(hub, admin, f"m{n}")
                why = verdict(row, cores, len(hub_cpus))
                row["pass"] = not why
                results.append(row)
                print(
                    f"N={n:>6}: {'PASS' if not why else 'FAIL (' + '; '.join(why) + ')'}\n"
                    f"  hub CPU {hc:5.1f} % of a core ({hc / cores:4.1f} % of the machine),"
                    f" simulator {sc:5.1f} % ({len(sim_procs)} workers), probe {pc:4.1f} %,"
                    f" machine {mc:5.1f} % (others {row['other_cpu']:.1f} %)\n"
                    f"  hub CPU by process: {row['hub_split']}\n"
                    + (
                        f"  hub share of its {len(hub_cpus)} pinned cores:"
                        f" {hc / len(hub_cpus):.1f} %\n"
                        if hub_cpus
                        else ""
                    )
                    + f""
                    f"  lag p50 {row['p50']:.3f} s p99 {row['p99']:.3f} s max {row['max']:.3f} s"
                    f" ({len(lags)} probes, {row['timeouts']} timed out)\n"
                    f"  settled {settle_s:.1f} s after the step began"
                    + ("" if settled else f" (NOT: {unsettled})")
                    + f"; in the window {row['beats_s']:.0f} heartbeats/s, {row['rows_s']:.0f}"
                    f" rows acked/s in {row['msgs_s']:.0f} report messages/s, publish failures"
                    f" {row['fail']}, backlog {row['backlog']}\n"
                    f"  hub CPU per device-minute: {row['ms_dev_min']:.3f} core-ms"
                    f" (split: {row['hub_split']})\n"
                    f"  hub RSS {row['hub_rss']:.0f} MB, simulator RSS {row['sim_rss']:.0f} MB,"
                    f" DB {row['db_mb']:.1f} MB (+{row['growth_kb']:.1f} KB/device/day)"
                    + (
                        f", litestream lag {row['ls_lag']:.2f} s (restore {row['ls_restore']:.2f} s)"
                        if args.litestream
                        else ""
                    )
                    + f"\n  step took {time.monotonic() - t_start:.0f} s; load {row['load']}",
                    flush=True,
                )
                if args.profile:
                    assert hub.proc is not None
                    tag = "baseline-" if code_root is not None else ""
                    out = await profile(hub.proc.pid, Path(args.profile) / f"hub-{tag}{n}.txt", 20)
                    print(f"  profile: {out}", flush=True)
                if why:
                    break
    finally:
        await workers.stop()
        await nc.close()
        hub.stop()
    for r in results:
        r["label"] = label or hub_commit()
        r["idle_cpu"] = idle_cpu
    passing = [r["n"] for r in results if r["pass"]]
    print(f"largest passing N: {max(passing) if passing else 0} (goal 100000);"
          f" criterion hub CPU < {f'80 % of its {len(hub_cpus)} pinned cores' if hub_cpus else f'50 % of {cores} cores'},"
          f" lag p99 < 2 s, settled;"
          f" hub commit {label or hub_commit()}")  # fmt: skip
    return results


def snapshot(rev: str, into: Path) -> tuple[Path, str]:
    """``git archive`` of ``rev`` (this repository) into ``into``: (the tree, its short sha)."""
    root = Path(hub_pkg.__file__).resolve().parent.parent
    sha = subprocess.run(["git", "rev-parse", "--short", rev], capture_output=True, text=True,
                         cwd=root, check=True).stdout.strip()  # fmt: skip
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], capture_output=True, cwd=root, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into, sha


def comparison(runs: list[list[dict[str, Any]]]) -> str:
    """The closing table of a ``--baseline`` invocation: each run's steps, side by side."""
    lines = [
        "| hub code | N | hub CPU % of a core (by process) | per device-minute, core-ms"
        " | report msgs/s | lag p50 / p99 s | litestream lag s | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for results in runs:
        for r in results:
            ls = f"{r['ls_lag']:.2f}" if "ls_lag" in r else "-"
            lines.append(
                f"| {r['label']} | {r['n']} | {r['hub_cpu']:.1f} ({r['hub_split']}) |"
                f" {r['ms_dev_min']:.3f} | {r['msgs_s']:.0f} | {r['p50']:.3f} / {r['p99']:.3f}"
                f" | {ls} | {r['load']} |"
            )
    idle = "; ".join(f"{rs[0]['label']} {rs[0]['idle_cpu']:.1f} %" for rs in runs if rs)
    return "\n".join(lines) + f"\nidle hub (before the steps): {idle}"


def hub_commit() -> str:
    """The commit the hub code was run from (the bench may run from an exported snapshot of
    a commit, so that another engineer's uncommitted hub/ edits are not measured)."""
    root = Path(hub_pkg.__file__).resolve().parent.parent
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                       cwd=root)  # fmt: skip
    if r.returncode != 0:
        stamp = root / "COMMIT"
        return stamp.read_text().strip() if stamp.exists() else f"unknown (code in {root})"
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "hub"], capture_output=True,
                           text=True, cwd=root)  # fmt: skip
    return r.stdout.strip() + (" + uncommitted hub/ changes" if dirty.stdout.strip() else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", default="200,1000")
    ap.add_argument("--window", type=float, default=20.0, help="measured seconds per step")
    ap.add_argument("--ramp", type=float, default=-1, help="seconds (default: one heartbeat)")
    ap.add_argument("--settle", type=float, default=120.0, help="at most this long to drain")
    ap.add_argument("--heartbeat", type=float, default=30.0)
    ap.add_argument("--rollup", type=float, default=60.0)
    ap.add_argument("--connections", type=int, default=2, help="per worker")
    ap.add_argument("--per-worker", type=int, default=20_000, help="devices per worker process")
    ap.add_argument("--lifetime", type=float, default=3600.0, help="bound on the whole run")
    ap.add_argument("--seed-devices", type=int, default=0, help="devices in the DB (≥ max step)")
    ap.add_argument("--cores", type=int, default=0)
    ap.add_argument("--profile", default="", help="directory for py-spy profiles of the hub")
    ap.add_argument("--no-litestream", dest="litestream", action="store_false")
    ap.add_argument(
        "--hub-cpus", default="", help="pin the hub's processes to these CPUs (0,1 or 0-1)"
    )
    ap.add_argument("--sim-cpus", default="", help="pin the simulator and probe to these CPUs")
    ap.add_argument(
        "--nats-auth",
        choices=("jwt", "password"),
        default="jwt",
        help="the hub's NATS auth mode (jwt: the default of new hubs)",
    )
    ap.add_argument("--workers", type=int, default=1, help="hub workers (1: the one hub)")
    ap.add_argument(
        "--flush", type=float, default=0.0,
        help="rollups wait up to this long to share a report (the agent's default: 600)",
    )  # fmt: skip
    ap.add_argument(
        "--warmup", type=float, default=0.0, help="seconds to wait after settling, per step"
    )
    ap.add_argument(
        "--baseline", default="", help="first run the hub code of this commit (same run)"
    )
    ap.add_argument(
        "--nats-nodes", type=int, choices=(1, 3), default=1,
        help="3: the hub's nats-server as a 3-node cluster on this machine (init --cluster)",
    )  # fmt: skip
    ap.add_argument("--json-out", default="", help="write every step's figures to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-bench-fleet-"))
    try:
        if not args.baseline:
            rows = asyncio.run(run(args, work))
            if args.json_out:
                Path(args.json_out).write_text(json.dumps(rows, indent=1, default=str))
        else:
            base, sha = snapshot(args.baseline, work / "baseline-src")
            label = f"baseline {sha} ({args.baseline})"
            for sub in ("baseline", "tree"):
                (work / sub).mkdir()
            first = asyncio.run(run(args, work / "baseline", base, label))
            second = asyncio.run(run(args, work / "tree"))
            print(f"\nsame run, baseline first; load average now {loadavg()}")
            print(comparison([first, second]))
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
