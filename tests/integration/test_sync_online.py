""" "Online" means the hub answered: a real `signalbeam-hub run`, a real `signalbeam-agent run`
with its supervised leaf nats-server, linked through a ``TcpProxy`` that can hold the link
open but silent (no RST) as well as cut it.

On a silent link the leaf's own /leafz still says the link is up (nats-server notices only
after its pings go unanswered, minutes later); the agent must still say "hub unreachable
since T" (T = the hub's last answer) in `signalbeam-agent status`, `/v1/status` and the HTML
page, and "online" again once the hub answers. The same for a reset link. How long each
took is printed (no timing assertions: the goal, two heartbeat intervals, is a figure)."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.http.tokens import TokenStore
from tests.harness.engines import EngineHandle
from tests.harness.ports import free_port
from tests.harness.proxy import TcpProxy
from tests.harness.sync_e2e import Device, enrollment_token
from tests.harness.sync_hub import SyncHub
from tests.harness.wait import eventually_blocking

pytestmark = [pytest.mark.engine, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
BEAT = 4.0  # the agent's heartbeat interval here (30 s by default)
WAIT = 120.0  # well under the leaf's own detection of a silent link (minutes)


# ------------------------------------------------------------------ the proxy itself


def test_proxy_silence_holds_bytes_without_closing_and_cut_closes() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    got: list[bytes] = []

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(100):
                got.append(data)
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    proxy = TcpProxy(server.getsockname()[1])
    try:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        client.sendall(b"one")
        assert client.recv(100) == b"one"
        proxy.silence()
        assert proxy.is_silent
        client.sendall(b"two")
        client.settimeout(1.0)
        with pytest.raises(TimeoutError):  # nothing comes back, and nothing is closed
            client.recv(100)
        assert got == [b"one"]
        proxy.restore()
        client.settimeout(10)
        assert client.recv(100) == b"two"  # held, then delivered: a stalled link
        proxy.cut()
        assert client.recv(100) == b""  # closed
        client.close()
    finally:
        proxy.close()
        server.close()


# ------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    proc = SyncHub(tmp_path_factory.mktemp("onlinehub") / "data")
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


class Agent:
    """A real enrolled agent with its local API on, and a viewer token for it."""

    def __init__(self, dev: Device) -> None:
        self.dev = dev
        self.port = free_port()
        dev.config.write_text(
            f'data_dir = "{dev.data}"\ndevice_id = "{dev.device_id}"\n'
            f'engine_socket = "{dev.engine.url}"\n'
            f'[http]\nbind = "127.0.0.1"\nport = {self.port}\n'
            f'[hub]\nheartbeat_interval = "{BEAT:g}s"\n'
        )
        tokens = TokenStore.in_data_dir(dev.data)
        try:
            _, self.token = tokens.create("test", "viewer", created_by="test")
        finally:
            tokens.close()

    def get(self, path: str) -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        basic = base64.b64encode(f"x:{self.token}".encode()).decode()
        req.add_header("Authorization", f"Basic {basic}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except OSError:
            return 0, b""

    def api_hub(self) -> dict[str, Any] | None:
        code, body = self.get("/v1/status")
        return json.loads(body)["hub"] if code == 200 else None

    def page(self) -> str:
        return self.get("/")[1].decode()

    def cli_status(self) -> tuple[str, dict[str, Any]]:
        def run(*extra: str) -> str:
            out = subprocess.run(
                [sys.executable, "-m", "agent", "status", "--config", str(self.dev.config), *extra],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
            assert out.returncode == 0, out.stderr
            return out.stdout

        return run(), json.loads(run("--json"))["hub"]

    def leaf_says_linked(self) -> bool:
        """The leaf server's own view (/leafz), which a silent link does not change."""
        conf = json.loads((self.dev.data / "leaf" / "leaf.conf").read_text())
        with urllib.request.urlopen(f"http://{conf['http']}/leafz", timeout=10) as resp:
            return int(json.loads(resp.read()).get("leafnodes", 0)) > 0


def _online(agent: Agent) -> bool:
    hub = agent.api_hub()
    return bool(agent.dev.online() and hub and hub["online"])


def _unreachable(agent: Agent) -> bool:
    hub = agent.api_hub()
    return bool(not agent.dev.online() and hub and hub["online"] is False)


def _check_unreachable(agent: Agent, last_answer: float) -> None:
    status = agent.dev.sync_status()
    assert status["online"] is False
    assert status["unreachable_since"] == status["last_contact"] >= last_answer
    human, doc = agent.cli_status()
    assert doc["online"] is False and doc["unreachable_since"] is not None
    assert "hub         unreachable since 20" in human, human
    hub = agent.api_hub()
    assert hub is not None and hub["configured"] is True and hub["online"] is False
    assert hub["unreachable_since"] is not None
    page = agent.page()
    assert "unreachable since 20" in page and "not configured" not in page


def test_online_means_the_hub_answered_on_silent_and_reset_links(
    hub: SyncHub, _podman_service: EngineHandle, tmp_path: Path
) -> None:
    dev = Device(tmp_path, "online-1", hub, _podman_service, enrollment_token(hub, 1))
    assert dev.enroll_result.returncode == 0, dev.enroll_result.stderr
    agent = Agent(dev)
    dev.start()
    try:
        eventually_blocking(lambda: _online(agent), "online at first", timeout=WAIT)
        # A linked device is "configured", whether or not [hub] url is set (leaf mode).
        hub_doc = agent.api_hub()
        assert hub_doc is not None and hub_doc["configured"] is True
        assert "online (last answer 20" in agent.page()
        human, _ = agent.cli_status()
        assert "hub         online (leaf), last answer from the hub" in human, human

        for how in ("silence", "cut"):
            before = dev.sync_status()["last_contact"]
            getattr(dev.proxy, how)()
            t0 = time.time()
            eventually_blocking(
                lambda: _unreachable(agent), f"unreachable after {how}", timeout=WAIT
            )
            noticed = time.time()
            status = dev.sync_status()
            if how == "silence":
                # The leaf still believes in its link: only the missing answers tell.
                assert agent.leaf_says_linked()
            _check_unreachable(agent, before)
            print(
                f"{how}: unreachable noticed {noticed - status['last_contact']:.1f}s after the"
                f" last answer ({noticed - t0:.1f}s after the {how}); heartbeat {BEAT:g}s,"
                f" load {os.getloadavg()[0]:.1f}"
            )
            dev.proxy.restore()
            eventually_blocking(lambda: _online(agent), f"online again after {how}", timeout=WAIT)
            assert dev.sync_status()["last_contact"] > status["last_contact"]
            assert dev.sync_status()["unreachable_since"] is None
    finally:
        dev.stop()
        _podman_service.remove_test_containers()
