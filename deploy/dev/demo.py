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
6. the TUI (`signalbeam tui`) when a terminal is attached; otherwise it prints how to
   reach it and keeps running until Ctrl-C (`--exit` tears down after the rollout).
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

from tests.harness.engines import EngineHandle, start_podman  # noqa: E402
from tests.harness.ports import free_port  # noqa: E402
from tests.harness.procs import ManagedProcess  # noqa: E402
from tests.harness.registry import Registry  # noqa: E402

BIN = Path(sys.executable).parent
DEVICES = (("pi-01", "lab,rpi"), ("pi-02", "lab,rpi"), ("nuc-01", "lab,x86"))

_SENSOR = (
    "i=0; while :; do i=$((i+1)); "
    'echo "reading $i temperature=21.$((i % 10))C sensor=$VERSION"; '
    "touch /tmp/healthy; sleep 2; done"
)
_RELAY = (
    "i=0; while :; do i=$((i+1)); "
    'echo "relay-controller $VERSION: relay1=$((i % 2)) relay2=0"; '
    "touch /tmp/healthy; sleep 3; done"
)
DEMO_IMAGES = {
    "demo/temp-sensor:1.2.0": f'ENV VERSION=1.2.0\nCMD ["/bin/sh", "-c", {json.dumps(_SENSOR)}]',
    "demo/temp-sensor:1.3.0": f'ENV VERSION=1.3.0\nCMD ["/bin/sh", "-c", {json.dumps(_SENSOR)}]',
    "demo/relay-controller:1.2.0": (
        f'ENV VERSION=1.2.0\nCMD ["/bin/sh", "-c", {json.dumps(_RELAY)}]'
    ),
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
    network_mode: none
    env:
      SAMPLE_INTERVAL: "2"
    healthcheck:
      type: exec
      command: ["/bin/sh", "-c", "test -f /tmp/healthy"]
      interval: 2s
      timeout: 2s
      retries: 2
    resources:
      memory: 32Mi
  - name: relay-controller
    image: {registry.ref("demo/relay-controller:1.2.0")}
    network_mode: none
    healthcheck:
      type: exec
      command: ["/bin/sh", "-c", "test -f /tmp/healthy"]
      interval: 2s
      timeout: 2s
      retries: 2
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
        res = subprocess.run(
            [str(BIN / "signalbeam-hub"), "init", "--data", str(data), "--json", *flags],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        init = json.loads(res.stdout)
        self.env = {"SIGNALBEAM_HUB": init["operator_url"], "SIGNALBEAM_API_KEY": init["admin_key"]}
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
            self.cli("bundle", "push", str(path))
        say("pushed warehouse-monitor 1.2.0 and 1.3.0")
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
        say(
            "rolling out warehouse-monitor@1.3.0 to group:lab (canary 33%: one device first, then the rest)"
        )
        rollout = self.cli(
            "rollout",
            "start",
            "warehouse-monitor@1.3.0",
            "--target",
            "group:lab",
            "--canary",
            "34%",
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

    def show_tui(self, exit_after: bool) -> None:
        print()
        say("the demo fleet is up")
        print(f"  hub logs, agents' logs: {self.workdir / 'logs'}")
        for device_id, port in self.http_ports.items():
            print(
                f"  {device_id}: local API http://127.0.0.1:{port}/  "
                f"(token: signalbeam-agent token create --config "
                f"{self.workdir / 'devices' / device_id / 'agent.toml'} --name tech --role viewer)"
            )
        print(f"  operator env: . {self.workdir / 'operator.env'}")
        print(f"  TUI:          . {self.workdir / 'operator.env'} && {BIN / 'signalbeam'} tui")
        print(f"  CLI:          . {self.workdir / 'operator.env'} && {BIN / 'signalbeam'} devices")
        if exit_after:
            return
        if sys.stdin.isatty() and sys.stdout.isatty():
            say("starting the TUI (press q to quit; the demo stops with it)")
            subprocess.run(
                [str(BIN / "signalbeam"), "tui"], env={**os.environ, **self.env}, check=False
            )
            return
        say("no terminal attached: the demo keeps running; press Ctrl-C to stop it")
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})

    def stop(self) -> None:
        say("stopping the demo")
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop(timeout=20)
        if self.engine is not None:
            with contextlib.suppress(Exception):
                self.engine.stop()
        if self.registry is not None:
            with contextlib.suppress(Exception):
                self.registry.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", default=os.environ.get("SB_DEMO_DIR", "/var/tmp/signalbeam-demo")
    )
    parser.add_argument("--exit", action="store_true", help="tear down after the rollout")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    demo = Demo(workdir)
    # SIGTERM must tear down like Ctrl-C so no process or container outlives the demo.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        demo.start_registry()
        demo.start_engine()
        demo.start_hub()
        demo.enroll_and_run_agents()
        demo.assign_and_roll_out()
        demo.show_tui(args.exit)
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"demo failed: {exc}\nlogs: {workdir / 'logs'}", file=sys.stderr)
        return 1
    finally:
        demo.stop()


if __name__ == "__main__":
    sys.exit(main())
