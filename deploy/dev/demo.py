"""`make demo`: a hub, three agents managing real containers, a bundle rolled out, the TUI.

Everything runs on this machine and on 127.0.0.1 only:

1. a local OCI registry (Debian's docker-registry) with the demo images, built from a
   busybox-static rootfs (nothing is pulled from the internet);
2. a private Podman service (its own socket and storage) that the three agents share —
   each agent only ever touches containers carrying its own device label;
3. a hub (`signalbeam-hub init` + `run`: nats-server with JetStream, litestream, the API);
4. three devices enrolled with a registration token, each agent with its own leaf
   nats-server, data dir and local HTTP API;
5. `warehouse-monitor@1.2.0` assigned to the group `lab`, then `1.3.0` rolled out with a
   canary wave;
6. then it prints what to try next (the TUI, the CLI, cutting a device off the hub).

    demo.py up                  in the background (`make demo`); returns once it is ready
    demo.py stop                stop it, remove everything it started (`make demo-stop`)
    demo.py offline|online ID   cut / restore that device's leaf link (a proxy per device)
    demo.py [run] [--exit]      in the foreground until Ctrl-C (or right after the rollout)

This file is the command (its verbs, the PID file, the background start); the stack it runs
is ``demo_stack.py`` and the images and bundle it deploys are ``demo_content.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from deploy.dev.demo_stack import (  # noqa: E402
    DEVICES,
    OFFLINE_AFTER,
    READY_LINE,
    Demo,
    interrupt,
    say,
)
from tests.harness.engines import kill_leftovers, unmount_below  # noqa: E402

DEFAULT_WORKDIR = "/var/tmp/signalbeam-demo"
PID_FILE = "demo.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _demo_pid(workdir: Path) -> int | None:
    try:
        pid = int((workdir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def run(workdir: Path, exit_after: bool) -> int:
    """The whole demo in this process: set up, then serve until a signal (or, with
    ``exit_after``, tear down after the rollout)."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / PID_FILE).write_text(f"{os.getpid()}\n")
    demo = Demo(workdir)
    # SIGTERM must tear down like Ctrl-C so no process or container outlives the demo.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        demo.start_registry()
        demo.start_engine()
        demo.start_hub()
        demo.enroll_and_run_agents()
        demo.assign_and_roll_out()
        demo.next_steps()
        if not exit_after:
            demo.serve()
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"demo failed: {exc}\nlogs: {workdir / 'logs'}", file=sys.stderr, flush=True)
        return 1
    finally:
        demo.stop()
        (workdir / PID_FILE).unlink(missing_ok=True)


def up(workdir: Path, timeout: float = 900) -> int:
    """`make demo`: start the demo in the background (its own session, output in
    WORKDIR/demo.log), show its progress, return once it is ready (or failed)."""
    if _demo_pid(workdir) is not None:
        print(f"a demo is already running from {workdir}: `make demo-stop` first", file=sys.stderr)
        return 1
    if workdir.exists():
        stop(workdir)  # leftovers of a demo that did not stop cleanly
    log_path = Path(f"{workdir}.log")
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "serve", "--workdir", str(workdir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives `make demo` and the terminal's Ctrl-C
        )
    shown = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        lines = text.splitlines(keepends=True)
        sys.stdout.write("".join(lines[shown:]))
        sys.stdout.flush()
        shown = len(lines)
        if READY_LINE in text:
            print(f"the demo runs in the background (PID {child.pid}, log {log_path})")
            return 0
        if child.poll() is not None:
            print(f"the demo exited with {child.returncode}; log: {log_path}", file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(f"the demo was not ready after {timeout:.0f} s; log: {log_path}", file=sys.stderr)
    return 1


def stop(workdir: Path, timeout: float = 90) -> int:
    """`make demo-stop`: SIGTERM to the demo (it stops its hub, agents, engine, registry),
    then anything still running from the workdir is killed by PID, mounts below it are
    released and the workdir is removed."""
    pid = _demo_pid(workdir)
    if pid is not None:
        say(f"stopping the demo (PID {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    if workdir.exists():
        # Only processes whose command line names this workdir: the demo's own children
        # (hub, nats-servers, agents, Podman service and its conmon monitors, registry).
        kill_leftovers(workdir)
        unmount_below(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    Path(f"{workdir}.log").unlink(missing_ok=True)
    say(f"demo stopped; {workdir} removed")
    return 0


def set_link(workdir: Path, device_id: str, offline: bool) -> int:
    if device_id not in {d for d, _ in DEVICES}:
        print(f"device: must be one of {', '.join(d for d, _ in DEVICES)}", file=sys.stderr)
        return 2
    if _demo_pid(workdir) is None:
        print(f"no demo is running from {workdir}", file=sys.stderr)
        return 1
    flag = workdir / "devices" / device_id / "offline"
    if offline:
        flag.touch()
        say(
            f"{device_id}: cutting its leaf link; the hub shows it offline within ~{OFFLINE_AFTER} s"
        )
    else:
        flag.unlink(missing_ok=True)
        say(f"{device_id}: restoring its leaf link; it catches up (outbox, desired state)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=("run", "up", "serve", "stop", "offline", "online"),
        help="run: in the foreground (default); up: in the background (make demo); "
        "stop: stop it and remove everything (make demo-stop); offline/online DEVICE: "
        "cut or restore a device's leaf link",
    )
    parser.add_argument("device", nargs="?", help="for offline/online: pi-01, pi-02 or nuc-01")
    parser.add_argument("--workdir", default=os.environ.get("SB_DEMO_DIR", DEFAULT_WORKDIR))
    parser.add_argument("--exit", action="store_true", help="tear down after the rollout")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    if args.command in ("offline", "online"):
        if not args.device:
            parser.error(f"{args.command} needs a device id")
        return set_link(workdir, args.device, offline=args.command == "offline")
    if args.command == "up":
        return up(workdir)
    if args.command == "stop":
        return stop(workdir)
    if _demo_pid(workdir) is not None:
        print(f"a demo is already running from {workdir}: `make demo-stop` first", file=sys.stderr)
        return 1
    return run(workdir, exit_after=args.exit)


if __name__ == "__main__":
    sys.exit(main())
