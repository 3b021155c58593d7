"""Real devices for end-to-end sync tests (no tests here): `signalbeam-agent enroll` + `run`
subprocesses on a real engine, each with its own supervised leaf nats-server whose link to
the hub goes through a cuttable ``TcpProxy``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.sync.service import read_status_file
from tests.harness.engines import EngineHandle
from tests.harness.procs import ManagedProcess
from tests.harness.proxy import TcpProxy
from tests.harness.registry import Registry
from tests.harness.sync_hub import SyncHub
from tests.harness.wait import eventually

REPO = Path(__file__).resolve().parents[2]


def hello_spec(registry: Registry, version: str) -> dict[str, Any]:
    """The hello bundle with no network: each container has its own loopback, so every device
    can run it on one engine with the same PORT (its image HEALTHCHECK probes inside)."""
    return {
        "bundle": "hello",
        "version": version,
        "containers": [
            {
                "name": "web",
                "image": registry.ref(f"sbtest/hello:{version.rsplit('.', 1)[0]}"),
                "network_mode": "none",
                "env": {"PORT": "8080"},
            }
        ],
        "update": {"health_window": 30},
    }


class Device:
    """One enrolled agent process; ``cut()``/``restore()`` its leaf link to the hub."""

    def __init__(
        self,
        root: Path,
        device_id: str,
        hub: SyncHub,
        engine: EngineHandle,
        token: str,
        tags: str = "lab",
    ) -> None:
        self.device_id = device_id
        self.dir = root / device_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = self.dir / "data"
        self.engine = engine
        self.config = self.dir / "agent.toml"
        self.config.write_text(
            f'data_dir = "{self.data}"\ndevice_id = "{device_id}"\n'
            f'engine_socket = "{engine.url}"\ndesired_poll_interval = "100ms"\n'
            '[reconcile]\ninterval = "5s"\n[http]\nenabled = false\n'
            # Its own lock directory: the default (/run/signalbeam/locks) is the host's.
            f'[update]\nlock_dir = "{self.dir / "locks"}"\ntimezone = "UTC"\n'
        )
        self.lock_dir = self.dir / "locks"
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent",
                "enroll",
                "--config",
                str(self.config),
                "--hub",
                hub.enroll_url,
                "--token",
                token,
                "--device-id",
                device_id,
                "--tags",
                tags,
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        self.enroll_result = out
        self.proxy = TcpProxy(int(hub.ports["leafnode"]))
        self.proc: ManagedProcess | None = None
        if out.returncode != 0:
            return
        # The leaf dials the hub through the proxy, so the test can cut the link.
        creds_path = self.data / "hub-credentials.json"
        creds = json.loads(creds_path.read_text())
        creds["leaf_url"] = f"nats-leaf://127.0.0.1:{self.proxy.port}"
        creds_path.write_text(json.dumps(creds))

    def start(self) -> None:
        self.proc = ManagedProcess(
            f"agent-{self.device_id}",
            [sys.executable, "-m", "agent", "run", "--config", str(self.config)],
            self.dir / "agent.log",
            cwd=REPO,
        )

    def sync_status(self) -> dict[str, Any]:
        return read_status_file(self.data) or {}

    def online(self) -> bool:
        return bool(self.sync_status().get("online"))

    def cut(self) -> None:
        self.proxy.cut()

    def restore(self) -> None:
        self.proxy.restore()

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.data / 'agent.db'}?mode=ro", uri=True, timeout=10)

    def event_seqs(self) -> list[int]:
        conn = self.db()
        try:
            return [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")]
        finally:
            conn.close()

    def containers(self) -> list[dict[str, Any]]:
        return self.engine.containers(f"io.signalbeam.device={self.device_id}")

    def running_images(self) -> list[str]:
        return sorted(str(c.get("Image")) for c in self.containers() if c.get("State") == "running")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=30)
        self.proxy.close()


def enrollment_token(hub: SyncHub, uses: int) -> str:
    """A registration token for ``uses`` devices, made through the operator API."""

    async def create() -> str:
        async with hub.client() as admin:
            tok = await admin.call("tokens.create", {"tenant": "acme", "max_uses": uses})
        return str(tok["token"])

    return asyncio.run(create())


@contextmanager
def running_fleet(
    hub: SyncHub, engine: EngineHandle, root: Path, ids: tuple[str, ...], token: str
) -> Iterator[dict[str, Device]]:
    """Enroll one real agent per id with ``token``, start them all; stop them all after."""
    devices = {d: Device(root, d, hub, engine, token) for d in ids}
    try:
        for dev in devices.values():
            assert dev.enroll_result.returncode == 0, dev.enroll_result.stderr
            dev.start()
        yield devices
    finally:
        for dev in devices.values():
            dev.stop()


async def deploy_to(hub: SyncHub, device_id: str, spec: dict[str, Any]) -> None:
    """Once ``device_id`` is online at the hub, push ``spec``, assign it to the device, and
    wait until the device reports every container of it running."""
    services = {str(c["name"]) for c in spec["containers"]}
    async with hub.client() as admin:

        async def online() -> bool:
            return (await admin.call("devices.get", {"id": device_id}))["status"] == "online"

        await eventually(online, timeout=120, what="the agent online at the hub")
        await admin.call("bundles.push", {"spec": spec})
        ref = f"{spec['bundle']}@{spec['version']}"
        await admin.call("assign", {"target": f"device:{device_id}", "bundle": ref})

        async def running() -> bool:
            d = await admin.call("devices.get", {"id": device_id})
            observed = ((d.get("reported") or {}).get("state") or {}).get("observed") or {}
            # "name" is the engine's container name; "service" the bundle's
            up = {
                c.get("service")
                for c in observed.get("containers") or []
                if c.get("state") == "running"
            }
            return up >= services

        await eventually(running, timeout=180, what="every container reported running")


@contextmanager
def deployed_device(
    hub: SyncHub, engine: EngineHandle, root: Path, device_id: str, spec: dict[str, Any]
) -> Iterator[Device]:
    """One real agent, enrolled with a one-use token, running ``spec`` from the hub; its
    containers are removed after."""
    tok = enrollment_token(hub, 1)
    try:
        with running_fleet(hub, engine, root, (device_id,), tok) as devices:
            asyncio.run(deploy_to(hub, device_id, spec))
            yield devices[device_id]
    finally:
        engine.remove_test_containers()
