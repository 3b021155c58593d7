"""`signalbeam` start-up: wall time, CPU and peak RSS of one whole command, per verb.

Three commands: ``--help``, offline ``bundle validate`` of the example bundle, and a hub
verb (``devices`` against a real `signalbeam-hub run` on loopback, five devices). Each is
run as its own process, ``--runs`` times, and measured with ``wait4`` (that process's own
CPU and max RSS). Three figures per command, all in this run:

- baseline: a bare interpreter (the same Python, site and all) writing the same output
  bytes, so what is left above it is the CLI's own cost;
- before: the CLI as it was at ``--before`` (default e2455d7, when every verb imported the
  NATS client and aiohttp), extracted with ``git archive`` and run with the same hub;
- after: the working tree's CLI.

Medians are printed, with the load average before and after (a busy box inflates all three
alike; compare within a run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "bundles" / "examples" / "warehouse-monitor" / "1.3.0.yaml"
PACKAGES = ("tui", "protocol", "sbutil", "bundles")
GNU_TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, bytes]:
    """(wall s, CPU s, max RSS MiB, stdout) of one process run to its end.

    Through GNU time when it is there: a child forked from this process (some 50 MiB with
    the hub's test helpers loaded) would report this process's RSS as its own high-water
    mark, which survives exec; time is small, so the figure is the command's own.
    """
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as rep:
        timed = [GNU_TIME, "-f", "%e %U %S %M", "-o", rep.name, *argv] if GNU_TIME else argv
        start = time.monotonic()
        # cwd: neither tree, or `python -m tui.cli` would import the one it is run from.
        proc = subprocess.Popen(
            timed, stdout=out, stderr=subprocess.DEVNULL, env=env, cwd=tempfile.gettempdir()
        )
        _, _, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        proc.returncode = 0  # reaped by wait4 above; keeps Popen from waiting again
        out.seek(0)
        data = out.read()
        if GNU_TIME:
            fields = rep.read().split()[-4:]
            return (
                float(fields[0]),
                float(fields[1]) + float(fields[2]),
                int(fields[3]) / 1024,
                data,
            )
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, data


def series(argv: list[str], env: dict[str, str], runs: int) -> tuple[dict[str, float], bytes]:
    got = [measure(argv, env) for _ in range(runs)]
    figures = {
        "wall": statistics.median(g[0] for g in got),
        "cpu": statistics.median(g[1] for g in got),
        "rss": statistics.median(g[2] for g in got),
    }
    return figures, got[-1][3]


def extract_before(ref: str, into: Path) -> Path | None:
    """The packages the CLI needs, as they were at ``ref``; None without git history."""
    try:
        tar = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref, *PACKAGES],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        into.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"(no 'before' figures: git archive {ref}: {exc})")
        return None
    return into


def row(name: str, f: dict[str, float] | None, base: dict[str, float]) -> str:
    if f is None:
        return f"  {name:<9} -"
    return (
        f"  {name:<9} wall {f['wall'] * 1000:6.0f} ms  CPU {f['cpu'] * 1000:6.0f} ms"
        f" ({f['cpu'] / base['cpu']:.1f}x baseline)  max RSS {f['rss']:5.1f} MiB"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="runs per figure (default 7)")
    ap.add_argument("--before", default="e2455d7", help="git ref of the 'before' CLI")
    ap.add_argument("--no-hub", action="store_true", help="skip the hub verb")
    args = ap.parse_args()
    runs = max(1, min(args.runs, 50))
    print(f"load average before: {loadavg()}")
    if GNU_TIME is None:
        print("(no GNU time: max RSS includes this process's own, inherited at fork)")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALBEAM_")}
    base_env["SIGNALBEAM_CONFIG"] = "/nonexistent/config.toml"

    hub: Any = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    try:
        cases: list[tuple[str, list[str]]] = [
            ("--help", ["--help"]),
            ("bundle validate", ["bundle", "validate", str(EXAMPLE)]),
        ]
        if not args.no_hub:
            from tests.integration.test_hub_api import HubProcess, seed_devices

            hub = HubProcess(tmp / "hub", litestream=False, seed=seed_devices)
            base_env.update(SIGNALBEAM_HUB=hub.url, SIGNALBEAM_API_KEY=hub.admin_key)
            cases.append(("devices (hub verb)", ["devices"]))
        before_root = extract_before(args.before, tmp / "before")
        for title, verb in cases:
            after_env = {**base_env, "PYTHONPATH": str(ROOT)}
            after, output = series([sys.executable, "-m", "tui.cli", *verb], after_env, runs)
            dump = tmp / "output"
            dump.write_bytes(output)
            bare = (
                "import sys; f = open(sys.argv[1], 'rb'); "
                "sys.stdout.buffer.write(f.read()); sys.stdout.flush()"
            )
            base, _ = series([sys.executable, "-c", bare, str(dump)], after_env, runs)
            before = None
            if before_root is not None:
                env = {**base_env, "PYTHONPATH": str(before_root)}
                before, _ = series([sys.executable, "-m", "tui.cli", *verb], env, runs)
            print(f"signalbeam {title} ({len(output)} bytes of output, median of {runs}):")
            print(row("baseline", base, base))
            print(row("before", before, base))
            print(row("after", after, base))
    finally:
        if hub is not None:
            hub.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
