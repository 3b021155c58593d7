"""Real devices for end-to-end sync tests (no tests here): `signalbeam-agent enroll` + `run`
subprocesses on a real engine, each with its own supervised leaf nats-server whose link to
the hub goes through a cuttable ``TcpProxy``."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.sync.service import read_status_file
from tests.harness.engines import EngineHandle
from tests.harness.procs import ManagedProcess
from tests.harness.proxy import TcpProxy
from tests.harness.registry import Registry
from tests.harness.sync_hub import SyncHub
from tests.harness.wait import eventually
from tui.client import HubClient

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


def unhealthy_spec(registry: Registry) -> dict[str, Any]:
    """hello 3.0.0 whose image fails its health check (``sbtest/unhealthy:1.0``): the agent
    rolls it back to what ran before."""
    spec = hello_spec(registry, "2.0.0")
    spec["version"] = "3.0.0"
    spec["containers"][0]["image"] = registry.ref("sbtest/unhealthy:1.0")
    return spec


async def lab_on_hello_1(
    admin: HubClient, registry: Registry, ids: tuple[str, ...], timeout: float
) -> None:
    """The rollout tests' start: every device online, in group ``lab``, with hello 1.0.0,
    2.0.0 and the unhealthy 3.0.0 pushed, and running 1.0.0 healthy (so a rollout has
    something to roll back to). Done once per hub: a second call finds the group."""

    async def all_online() -> bool:
        items = (await admin.call("devices.list", {}))["items"]
        return set(ids) <= {d["id"] for d in items if d["status"] == "online"}

    await eventually(all_online, timeout=60, what="devices online at the hub")
    if "lab" in {g["name"] for g in (await admin.call("groups.list", {}))["items"]}:
        return
    await admin.call("groups.create", {"name": "lab"})
    for d in ids:
        await admin.call("groups.add", {"name": "lab", "device": d})
    for v in ("1.0.0", "2.0.0"):
        await admin.call("bundles.push", {"spec": hello_spec(registry, v)})
    await admin.call("bundles.push", {"spec": unhealthy_spec(registry)})
    await admin.call("assign", {"target": "group:lab", "bundle": "hello@1.0.0"})

    async def on_1() -> bool:
        for d in ids:
            got = await admin.call("devices.get", {"id": d})
            dep = ((got.get("reported") or {}).get("state") or {}).get("deployment") or {}
            if (dep.get("bundle_ref"), dep.get("status")) != ("hello@1.0.0", "healthy"):
                return False
        return True

    await eventually(on_1, timeout=timeout, what="every device healthy on 1.0")


async def rollout_in(
    admin: HubClient, rollout_id: str, states: tuple[str, ...], timeout: float
) -> dict[str, Any]:
    """The rollout once it is in one of ``states`` (waited for up to ``timeout`` seconds)."""

    async def reached() -> dict[str, Any] | None:
        r: dict[str, Any] = await admin.call("rollouts.get", {"id": rollout_id})
        return r if r["state"] in states else None

    result: dict[str, Any] = await eventually(
        reached, f"rollout {rollout_id} in {states}", timeout=timeout, interval=0.5
    )
    return result


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


def module_fleet(name: str, ids: tuple[str, ...]) -> Any:
    """A module-scoped ``fleet`` fixture: ``enrolled_fleet`` of ``ids`` on the module's
    ``hub`` and the suite's Podman service."""

    @pytest.fixture(scope="module")
    def fleet(
        hub: SyncHub, _podman_service: EngineHandle, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[dict[str, Device]]:
        with enrolled_fleet(hub, _podman_service, tmp_path_factory.mktemp(name), ids) as devices:
            yield devices

    return fleet


@contextmanager
def enrolled_fleet(
    hub: SyncHub, engine: EngineHandle, root: Path, ids: tuple[str, ...]
) -> Iterator[dict[str, Device]]:
    """A module's fleet: one real agent per id, enrolled with a token for exactly them and
    running; the agents stopped and the test containers removed after."""
    try:
        with running_fleet(hub, engine, root, ids, enrollment_token(hub, len(ids))) as devices:
            yield devices
    finally:
        engine.remove_test_containers()


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


@dataclass
class LoneAgent:
    """An agent with no engine, enrolled as the deploy enrolls (deploy/commands.py: the
    bootstrap secret in the environment, the token on standard input, neither in argv); not
    running until ``start``."""

    device_id: str
    root: Path
    token: str
    argv: list[str]  # the enroll command
    enrolled: subprocess.CompletedProcess[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "agent.toml"

    def start(self) -> ManagedProcess:
        return ManagedProcess(
            f"agent-{self.device_id}",
            [sys.executable, "-m", "agent", "run", "--config", str(self.config)],
            self.root / "agent.log",
            cwd=REPO,
        )


def lone_agent(
    hub: SyncHub, root: Path, device_id: str, *, hub_port: int | None = None, leaf_url: str = ""
) -> LoneAgent:
    """(Blocking: from a test's loop, ``await asyncio.to_thread(lone_agent, ...)``.) Write the config (heartbeats every 2 s, no HTTP; ``leaf_url`` when its leaf must dial
    something else than the hub's own, a proxy), enroll through ``hub_port`` (the hub's
    client port by default) with a one-use token; the enrollment must succeed."""
    data = root / "data"
    root.mkdir(parents=True)
    leaf = f'leaf_url = "{leaf_url}"\n' if leaf_url else ""
    (root / "agent.toml").write_text(
        f'data_dir = "{data}"\ndevice_id = "{device_id}"\n'
        f'engine_socket = "unix://{root / "no-engine.sock"}"\n'
        f'[http]\nenabled = false\n[hub]\nheartbeat_interval = "2s"\n{leaf}'
    )
    token = enrollment_token(hub, 1)
    argv = [sys.executable, "-m", "agent", "enroll", "--config", str(root / "agent.toml")]
    argv += ["--hub", f"127.0.0.1:{hub_port or hub.port}", "--token-file", "-"]
    argv += ["--device-id", device_id]
    env = {**os.environ, "SB_ENROLL_PASSWORD": hub.secret("enroll_password")}
    out = subprocess.run(
        argv, input=token, env=env, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    return LoneAgent(device_id, root, token, argv, out)
