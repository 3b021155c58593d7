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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hub.rollouts.machine import canary_size  # noqa: E402
from tests.harness.engines import (  # noqa: E402
    EngineHandle,
    kill_leftovers,
    start_podman,
    unmount_below,
)
from tests.harness.ports import free_port  # noqa: E402
from tests.harness.procs import ManagedProcess  # noqa: E402
from tests.harness.proxy import TcpProxy  # noqa: E402
from tests.harness.registry import Registry  # noqa: E402

BIN = Path(sys.executable).parent
CANARY_PERCENT = 33  # the demo rollout's first wave: one of the three devices
DEVICES = (("pi-01", "lab,rpi"), ("pi-02", "lab,rpi"), ("nuc-01", "lab,x86"))
DEFAULT_WORKDIR = "/var/tmp/signalbeam-demo"
# Short, so a cut device shows offline soon; above the agents' 30 s heartbeat interval, so
# connected devices never flap.
OFFLINE_GRACE = 45
READY_LINE = "demo: ready"

# Busybox stand-ins for the real images: each serves a status page with busybox httpd on the
# first free port of its range on 127.0.0.1 (host networking; the three demo devices share
# this machine, so each container finds its own port) and logs a reading every few seconds.
_STATUS = (
    "mkdir -p /tmp/www; port=; "
    "for p in $PORTS; do if httpd -p 127.0.0.1:$p -h /tmp/www 2>/dev/null; "
    "then port=$p; break; fi; done; "
    'echo "$NAME $VERSION: status page http://127.0.0.1:${port:-none}/"; '
)
_SENSOR = _STATUS + (
    "i=0; while :; do i=$((i+1)); "
    'line="reading $i temperature=21.$((i % 10))C sensor=$VERSION"; echo "$line"; '
    'printf "%s\\n" "$NAME $VERSION on port ${port:-none}" "$line" > /tmp/www/index.html; '
    "touch /tmp/healthy; sleep 2; done"
)
_RELAY = _STATUS + (
    "i=0; while :; do i=$((i+1)); "
    'line="relay-controller $VERSION: relay1=$((i % 2)) relay2=0"; echo "$line"; '
    'printf "%s\\n" "$NAME $VERSION on port ${port:-none}" "$line" > /tmp/www/index.html; '
    "touch /tmp/healthy; sleep 3; done"
)
SENSOR_PORTS = " ".join(str(p) for p in range(18081, 18091))
RELAY_PORTS = " ".join(str(p) for p in range(18091, 18101))


def _image(name: str, version: str, ports: str, script: str) -> str:
    return (
        f"ENV NAME={name} VERSION={version} PORTS={json.dumps(ports)}\n"
        f'CMD ["/bin/sh", "-c", {json.dumps(script)}]'
    )


DEMO_IMAGES = {
    "demo/temp-sensor:1.2.0": _image("temp-sensor", "1.2.0", SENSOR_PORTS, _SENSOR),
    "demo/temp-sensor:1.3.0": _image("temp-sensor", "1.3.0", SENSOR_PORTS, _SENSOR),
    "demo/relay-controller:1.2.0": _image("relay-controller", "1.2.0", RELAY_PORTS, _RELAY),
}


def bundle_yaml(registry: Registry, version: str, sensor_tag: str) -> str:
    return f"""bundle: warehouse-monitor
version: {version}
description: Demo warehouse monitor (temperature sensor + relay controller)
update:
  strategy: download-then-kill
  health_window: 30s
containers:
  - name: temp-sensor
    image: {registry.ref("demo/temp-sensor:" + sensor_tag)}
    network_mode: host
    env:
      SAMPLE_INTERVAL: "2"
    healthcheck:
      type: exec
      command: ["/bin/sh", "-c", "test -f /tmp/healthy"]
      interval: 10s
      timeout: 2s
      retries: 2
      start_period: 5s
    resources:
      memory: 32Mi
  - name: relay-controller
    image: {registry.ref("demo/relay-controller:1.2.0")}
    network_mode: host
    healthcheck:
      type: exec
      command: ["/bin/sh", "-c", "test -f /tmp/healthy"]
      interval: 10s
      timeout: 2s
      retries: 2
      start_period: 5s
"""


def say(msg: str) -> None:
    print(f"\033[1m==>\033[0m {msg}" if sys.stdout.isatty() else f"==> {msg}", flush=True)


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[ManagedProcess] = []
        self.registry: Registry | None = None
        self.engine: EngineHandle | None = None
        self.env: dict[str, str] = {}
        self.http_ports: dict[str, int] = {}
        # Each device's leaf link runs through a proxy that `demo.py offline ID` cuts.
        self.proxies: dict[str, TcpProxy] = {}
        self.leaf_port = 0

    # -- helpers -----------------------------------------------------------------------
    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> Any:
        res = subprocess.run(
            [str(BIN / "signalbeam"), "--json", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env},
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"signalbeam {' '.join(args)} failed: {res.stderr or res.stdout}")
        return json.loads(res.stdout) if res.stdout.strip() else None

    def wait(self, what: str, check: Any, timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        last_exc: Exception | None = None
        while time.monotonic() < deadline:
            try:
                result = check()
                if result:
                    return result
            except Exception as exc:  # the hub may still be starting; retry within the bound
                last_exc = exc
            time.sleep(1)
        raise TimeoutError(f"timed out waiting for {what}" + (f": {last_exc}" if last_exc else ""))

    # -- steps -------------------------------------------------------------------------
    def start_registry(self) -> Registry:
        say("starting a local registry and building the demo images (busybox-static)")
        self.registry = Registry(self.workdir / "registry")
        self.registry.push_test_images(DEMO_IMAGES)
        return self.registry

    def start_engine(self) -> EngineHandle:
        assert self.registry is not None
        say("starting a private Podman service for the demo devices")
        self.engine = start_podman(self.workdir / "podman", self.registry.registries_conf)
        return self.engine

    def start_hub(self) -> None:
        say("initialising and starting the hub")
        data = self.workdir / "hub"
        ports = {
            "--client-port": free_port(),
            "--leafnode-port": free_port(),
            "--monitor-port": free_port(),
            "--http-port": free_port(),
        }
        flags = [x for k, v in ports.items() for x in (k, str(v))]
        flags += ["--host", "127.0.0.1", "--http-host", "127.0.0.1", "--public-host", "127.0.0.1"]
        self.leaf_port = ports["--leafnode-port"]
        res = subprocess.run(
            [
                str(BIN / "signalbeam-hub"),
                "init",
                "--data",
                str(data),
                "--json",
                "--offline-grace",
                str(OFFLINE_GRACE),
                *flags,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        init = json.loads(res.stdout)
        self.env = {
            "SIGNALBEAM_HUB": init["operator_url"],
            "SIGNALBEAM_API_KEY": init["admin_key"],
            # The operator's bundle-signing key lives here, never in the hub's data dir.
            "SIGNALBEAM_KEYS_DIR": str(self.workdir / "keys"),
        }
        self.enroll_url = init["enroll_url"]
        self.hub_http = ports["--http-port"]
        (self.workdir / "operator.env").write_text(
            "".join(f"export {k}='{v}'\n" for k, v in self.env.items())
        )
        self.procs.append(
            ManagedProcess(
                "hub",
                [str(BIN / "signalbeam-hub"), "run", "--data", str(data), *flags],
                self.workdir / "logs" / "hub.log",
            )
        )
        self.wait("the hub API", lambda: isinstance(self.cli("bundle", "list"), list | dict))
        # A new hub requires signed bundles (docs/security.md): the operator's key and the
        # fleet's first trust set come before any device enrolls, so each learns the key then.
        key = self.cli("keys", "create", "demo")
        self.cli("keys", "trust", "demo")
        say(f"bundle-signing key demo ({key['key_id']}) trusted by the fleet")

    def enroll_and_run_agents(self) -> None:
        assert self.engine is not None
        token = self.cli(
            "token", "create", "--tenant", "demo", "--expires", "1h", "--uses", str(len(DEVICES))
        )
        secret = token.get("token") if isinstance(token, dict) else None
        if not secret:
            raise RuntimeError(f"token create gave no token: {token}")
        for device_id, tags in DEVICES:
            say(f"enrolling {device_id} (tags {tags}) and starting its agent")
            ddir = self.workdir / "devices" / device_id
            ddir.mkdir(parents=True, exist_ok=True)
            http_port = free_port()
            self.http_ports[device_id] = http_port
            conf = ddir / "agent.toml"
            conf.write_text(
                f'data_dir = "{ddir / "data"}"\n'
                f'device_id = "{device_id}"\n'
                'engine = "podman"\n'
                f'engine_socket = "{self.engine.url}"\n'
                '[reconcile]\ninterval = "30s"\n'
                # Three devices on one host: each its own lock directory (an app's lock
                # file there holds back that device's updates only).
                f'[update]\nlock_dir = "{ddir / "locks"}"\n'
                f'[http]\nbind = "127.0.0.1"\nport = {http_port}\n'
            )
            subprocess.run(
                [
                    str(BIN / "signalbeam-agent"),
                    "enroll",
                    "--config",
                    str(conf),
                    "--hub",
                    self.enroll_url,
                    "--token",
                    secret,
                    "--tags",
                    tags,
                ],
                check=True,
                timeout=60,
                capture_output=True,
                text=True,
            )
            proxy = TcpProxy(self.leaf_port)
            self.proxies[device_id] = proxy
            creds_path = ddir / "data" / "hub-credentials.json"
            creds = json.loads(creds_path.read_text())
            creds["leaf_url"] = f"nats-leaf://127.0.0.1:{proxy.port}"
            creds_path.write_text(json.dumps(creds))
            self.procs.append(
                ManagedProcess(
                    f"agent-{device_id}",
                    [str(BIN / "signalbeam-agent"), "run", "--config", str(conf)],
                    self.workdir / "logs" / f"agent-{device_id}.log",
                )
            )

        def all_online() -> bool:
            devices = self.cli("devices")
            items = devices.get("items", devices) if isinstance(devices, dict) else devices
            online = {d["id"] for d in items if d.get("status") == "online"}
            return online >= {d for d, _ in DEVICES}

        self.wait("all devices online", all_online, timeout=90)
        say("all three devices are online")

    def running_version(self, device_id: str) -> str | None:
        """The bundle the device last reported running healthy (the hub's view)."""
        doc = self.cli("device", "show", device_id)
        state = (doc.get("reported") or {}).get("state") or {}
        dep = state.get("deployment") or {}
        if isinstance(dep, dict) and dep.get("status") == "healthy":
            ref = dep.get("bundle_ref")
            return ref if isinstance(ref, str) else None
        return None

    def assign_and_roll_out(self) -> None:
        assert self.registry is not None
        bundles = self.workdir / "bundles"
        bundles.mkdir(exist_ok=True)
        for version, tag in (("1.2.0", "1.2.0"), ("1.3.0", "1.3.0")):
            path = bundles / f"warehouse-monitor-{version}.yaml"
            path.write_text(bundle_yaml(self.registry, version, tag))
            self.cli("bundle", "push", "--sign", str(path))  # images pinned by digest
        say("pushed warehouse-monitor 1.2.0 and 1.3.0, signed")
        self.cli("group", "create", "lab", check=False)
        for device_id, _ in DEVICES:
            self.cli("group", "add", "lab", device_id)
        self.cli("assign", "group:lab", "warehouse-monitor@1.2.0")
        say("assigned warehouse-monitor@1.2.0 to group:lab; waiting for the devices to run it")
        for device_id, _ in DEVICES:
            self.wait(
                f"{device_id} to run 1.2.0",
                lambda d=device_id: self.running_version(d) == "warehouse-monitor@1.2.0",
                timeout=180,
            )
            say(f"{device_id} runs warehouse-monitor@1.2.0")
        # The first wave is ceil(devices x percent / 100) (hub.rollouts.machine.canary_size):
        # 33% of three is one device; 34% would be two.
        first = canary_size(len(DEVICES), CANARY_PERCENT)
        say(
            f"rolling out warehouse-monitor@1.3.0 to group:lab (canary {CANARY_PERCENT}%: "
            f"{first} of {len(DEVICES)} devices first, then the rest)"
        )
        rollout = self.cli(
            "rollout",
            "start",
            "warehouse-monitor@1.3.0",
            "--target",
            "group:lab",
            "--canary",
            f"{CANARY_PERCENT}%",
        )
        rid = str(rollout.get("id"))
        subprocess.run(
            [
                str(BIN / "signalbeam"),
                "rollout",
                "status",
                rid,
                "--watch",
                "--watch-timeout",
                "240",
            ],
            timeout=300,
            env={**os.environ, **self.env},
            check=False,
        )

    def next_steps(self) -> None:
        env = self.workdir / "operator.env"
        me = f"{BIN / 'python'} {Path(__file__).resolve()}"
        print()
        say("the demo fleet is up")
        print(f"  logs (hub, agents):  {self.workdir / 'logs'}")
        for device_id, port in self.http_ports.items():
            conf = self.workdir / "devices" / device_id / "agent.toml"
            print(
                f"  {device_id}: local API http://127.0.0.1:{port}/  (a token: "
                f"{BIN / 'signalbeam-agent'} token create --config {conf} --name tech --role viewer)"
            )
        print("  status pages of the containers: http://127.0.0.1:18081/ ... :18100/")
        print(f"  the operator's environment:  . {env}")
        print(f"  the TUI:      . {env} && {BIN / 'signalbeam'} tui")
        print(f"  the fleet:    . {env} && {BIN / 'signalbeam'} devices")
        print(f"  signing keys: . {env} && {BIN / 'signalbeam'} keys trusted")
        print(f"  cut pi-02 off the hub:  {me} offline pi-02   (offline after {OFFLINE_GRACE} s)")
        print(
            f"  ... meanwhile:          . {env} && {BIN / 'signalbeam'} assign device:pi-02 warehouse-monitor@1.2.0"
        )
        print(f"  and watch it catch up:  {me} online pi-02")
        print("  stop everything:        make demo-stop")
        print(READY_LINE, flush=True)

    def serve(self) -> None:
        """Keep the fleet up until SIGTERM/SIGINT; apply `offline`/`online` requests (a flag
        file per device) to that device's leaf-link proxy."""
        signal.signal(signal.SIGINT, _interrupt)
        while True:  # ends with KeyboardInterrupt (SIGINT, or SIGTERM via _interrupt)
            for device_id, proxy in self.proxies.items():
                cut = (self.workdir / "devices" / device_id / "offline").exists()
                if cut and not proxy.is_cut:
                    proxy.cut()
                    say(f"{device_id}: leaf link cut")
                elif not cut and proxy.is_cut:
                    proxy.restore()
                    say(f"{device_id}: leaf link restored")
            time.sleep(0.5)

    def stop(self) -> None:
        say("stopping the demo")
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop(timeout=20)
        for proxy in self.proxies.values():
            with contextlib.suppress(Exception):
                proxy.close()
        if self.engine is not None:
            with contextlib.suppress(Exception):
                self.engine.stop()
        if self.registry is not None:
            with contextlib.suppress(Exception):
                self.registry.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


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
    signal.signal(signal.SIGTERM, _interrupt)
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
            f"{device_id}: cutting its leaf link; the hub shows it offline within ~{OFFLINE_GRACE} s"
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
