"""A phased rollout to a whole simulated fleet: 1 % → 10 % → 50 % → 100 % with a bake.

    python -m bench.bench_rollout_phases                       # 1000 devices, 4 phases
    python -m bench.bench_rollout_phases --devices 10000 --bake 10s

A real ``signalbeam-hub run`` with ``--devices`` devices (tag ``bench``), all brought online
by the simulator in worker processes (``bench.sim.workers``, as bench_fleet_rollout), ramped
over ``--ramp`` s and settled. Then, in the same run, on the same hub and fleet:

1. baseline: a rollout of ``bench@0.9.0`` to one device — the fixed cost of the path;
2. the measured rollout of ``bench@1.1.0`` to ``tag:bench`` with ``--phases`` (default
   ``1%,10%,50%,100%``), ``--bake`` (default 5s) and ``--max-failures`` (default 2%);
3. baseline (after the fleet settles again, at most 300 s): a one-phase rollout of
   ``bench@1.0.0`` to ``tag:bench`` — every device at once, what a rollout without phases
   costs on this machine right now (measured after, so its prompt burst of every device at
   once cannot leave the measured rollout behind a backlog; bounded to 15 minutes).

Printed for 2: each phase's size, how long its devices took (written → every device final,
from the hub's own ``rollout_phases`` stamps), its bake, the gap before the next phase
started; the total, the total less the bake times (to set beside baseline 2), hub and
simulator CPU, and the load average before and after each. Progress is read from the hub's
SQLite every 0.5 s (``rollouts.get`` would page every device). Bounded: each rollout gives up
after 30 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import time
from pathlib import Path
from typing import Any

from bench.sim import rollouts as fr
from bench.sim.benchhub import BenchHub, CpuMeter, loadavg
from sbutil.duration import parse_duration
from tui.client import HubClient

PREFIX = "ph"
LIMIT_S = 1800.0
FLAT_LIMIT_S = 900.0  # the baseline after it: reported as unfinished past this
STARTED: list[str] = []  # rollout ids in order, so an unfinished one can still be reported


def epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    return calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S")) + int(iso[20:23]) / 1000


async def rollout(
    hub: BenchHub, admin: HubClient, body: dict[str, Any], limit: float = LIMIT_S
) -> tuple[str, float]:
    r = await admin.call("rollouts.start", body)
    STARTED.append(r["id"])
    t0 = time.perf_counter()
    last_print = t0
    while True:
        status = fr.status(hub, r["id"])
        now = time.perf_counter()
        if status != "running" or now - last_print >= 10:
            counts = fr.counts(hub, r["id"])
            phase = hub.query(
                "SELECT max(phase) FROM rollout_targets WHERE rollout_id = ?"
                " AND written_at IS NOT NULL",
                (r["id"],),
            )[0][0]
            print(f"  {now - t0:6.1f} s: {status} phase {phase} {counts}", flush=True)
            last_print = now
        if status != "running":
            if status != "succeeded":
                reason = hub.query("SELECT reason FROM rollouts WHERE id = ?", (r["id"],))[0][0]
                raise RuntimeError(f"rollout {r['id']} ended {status}: {reason}")
            return r["id"], now - t0
        if now - t0 > limit:
            raise TimeoutError(f"rollout not done in {limit:.0f} s")
        await asyncio.sleep(0.5)


def phase_report(hub: BenchHub, rollout_id: str, bake: float) -> float:
    """Print one line per phase from the hub's stamps; returns the bake time spent."""
    rows = hub.query(
        "SELECT number, size, started_at, completed_at FROM rollout_phases"
        " WHERE rollout_id = ? ORDER BY number",
        (rollout_id,),
    )
    baked = 0.0
    for i, (number, size, started, completed) in enumerate(rows):
        s, c = epoch(started), epoch(completed)
        took = (c - s) if s is not None and c is not None else float("nan")
        line = f"  phase {number}/{len(rows)}: {size:>6} devices, all final in {took:6.1f} s"
        if i + 1 < len(rows):
            nxt = epoch(rows[i + 1][2])
            if nxt is not None and c is not None:
                line += f"; next phase {nxt - c:5.1f} s later (bake {bake:g} s)"
                baked += nxt - c
        print(line)
    return baked


async def run(args: argparse.Namespace, work: Path) -> None:
    ids = [f"{PREFIX}-{i:06d}" for i in range(args.devices)]
    bake = parse_duration(args.bake, allow_zero=True)
    print(f"load average before: {loadavg()}")
    hub, workers = fr.fleet_hub(work, ids, PREFIX, args.apply)
    hub_online = fr.all_online(hub, len(ids))
    try:
        async with HubClient(hub.url, hub.admin_key, timeout=60) as admin:
            for v in ("0.9.0", "1.0.0", "1.1.0"):
                await admin.call("bundles.push", {"spec": fr.spec(v)})
            await fr.bring_online(hub, workers, len(ids), args.ramp)
            print("baseline 1: one device")
            _, one = await rollout(hub, admin, {"bundle": "bench@0.9.0",
                                                "target": f"device:{ids[0]}"})  # fmt: skip
            print(f"measured: phases {args.phases}, bake {args.bake}, max failures"
                  f" {args.max_failures}")  # fmt: skip
            before = workers.totals()
            hub_cpu, sim_cpu = CpuMeter(hub.processes()), CpuMeter(workers.processes())
            took: float | None = None
            try:
                _, took = await rollout(
                    hub,
                    admin,
                    {"bundle": "bench@1.1.0", "target": "tag:bench", "phases": args.phases,
                     "bake": args.bake, "max_failures": args.max_failures},
                )  # fmt: skip
            except (RuntimeError, TimeoutError) as exc:
                print(f"the phased rollout did not finish: {exc}")
            rid = STARTED[-1]
            hc, sc = hub_cpu.percent(), sim_cpu.percent()
            load_mid = loadavg()
            await asyncio.sleep(1.5)  # the workers' stats lines come once a second
            after = workers.totals()
            flat = flat_cpu = None
            if not args.no_flat and took is not None:
                # Let the phased rollout's last burst drain (device outboxes, failures quiet,
                # every device online) so the baseline does not start behind its backlog.
                ok, why, waited = await workers.settle(
                    len(ids), 300, hub_check=hub_online, backlog_max=fr.backlog_max(len(ids))
                )
                print(f"settled again in {waited:.1f} s" + ("" if ok else f" (not: {why})"))
                print(f"baseline 2: one phase of {len(ids)} devices")
                meter = CpuMeter(hub.processes())
                try:
                    _, flat = await rollout(hub, admin, {"bundle": "bench@1.0.0",
                                                         "target": "tag:bench"}, FLAT_LIMIT_S)  # fmt: skip
                except (RuntimeError, TimeoutError) as exc:
                    print(f"baseline 2 did not finish: {exc}")
                flat_cpu = meter.percent()
            baked = phase_report(hub, rid, bake)
            print(f"baseline 1: rollout to 1 device succeeded in {one:.2f} s")
            if flat is not None:
                print(f"baseline 2: one-phase rollout to {len(ids)} devices succeeded in"
                      f" {flat:.1f} s; hub CPU {flat_cpu:.0f} % of a core;"
                      f" load average after it {loadavg()}")  # fmt: skip
            if took is not None:
                print(f"phased rollout to {len(ids)} devices succeeded in {took:.1f} s, of"
                      f" which {baked:.1f} s between phases (bake {bake:g} s each):"
                      f" {took - baked:.1f} s updating; hub CPU {hc:.0f} % of a core,"
                      f" simulator {sc:.0f} %; load average after it {load_mid}")  # fmt: skip
            print(f"simulator during the phased rollout: {fr.simulator_delta(before, after)}")
    finally:
        await workers.stop()
        hub.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    fr.fleet_args(ap)
    ap.add_argument("--phases", default="1%,10%,50%,100%")
    ap.add_argument("--bake", default="5s", help="a duration (sbutil.duration)")
    ap.add_argument("--max-failures", default="2%")
    ap.add_argument("--no-flat", action="store_true", help="skip baseline 2 (one phase)")
    args = ap.parse_args()
    fr.run_in_workdir("sb-bench-phases-", lambda work: run(args, work))


if __name__ == "__main__":
    main()
