"""The demo's stack, started step by step: the registry, the Podman service, the hub, the
three enrolled agents behind their link proxies, the assignment and the canary rollout, then
serving until stopped. ``deploy/dev/demo.py`` is the command around it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from deploy.dev.demo_content import DEMO_IMAGES, bundle_yaml
from hub.rollouts.machine import canary_size
from tests.harness.engines import EngineHandle, start_podman
from tests.harness.ports import free_port
from tests.harness.procs import ManagedProcess
from tests.harness.proxy import TcpProxy
from tests.harness.registry import Registry

BIN = Path(sys.executable).parent
CANARY_PERCENT = 33  # the demo rollout's first phase: one of the three devices
DEVICES = (("pi-01", "lab,rpi"), ("pi-02", "lab,rpi"), ("nuc-01", "lab,x86"))
# Short, so a cut device shows offline soon; above the agents' heartbeat interval, so
# connected devices never flap.
OFFLINE_GRACE = 45
# The demo's agents beat every 10 s: an idle agent stretches its heartbeats to two intervals
# and the hub waits three of those before it says offline (docs/sync.md "Presence"), so a
# cut device shows offline after max(OFFLINE_GRACE, 60 s) plus one sweep.
HEARTBEAT = 10
OFFLINE_AFTER = max(OFFLINE_GRACE, 3 * 2 * HEARTBEAT)
READY_LINE = "demo: ready"


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM (and SIGINT while serving) tear down like Ctrl-C."""
    raise KeyboardInterrupt


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
        key = self.cli("signing-key", "create", "demo")
        self.cli("signing-key", "trust", "demo")
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
                f'[hub]\nheartbeat_interval = "{HEARTBEAT}s"\n'
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
        print(f"  signing keys: . {env} && {BIN / 'signalbeam'} signing-key trusted")
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
        signal.signal(signal.SIGINT, interrupt)
        while True:  # ends with KeyboardInterrupt (SIGINT, or SIGTERM via interrupt)
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
