"""Shared by the TUI integration tests: a real hub process on free loopback ports, seeding,
and bounded waits for Pilot. (Named test_tui_* to sit with the TUI's tests; it has none.)

Devices cannot enrol before the sync issue lands, so the hub is seeded the way the hub's own
API tests do it: through the hub's public store API, before the hub process starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from hub.store import Store
from tests.harness.ports import free_port
from tests.harness.procs import ManagedProcess
from tests.harness.wait import eventually
from tui.app import SignalBeamApp
from tui.client import HubClient
from tui.hub.session import HubSession
from tui.widgets.base import HubView

EXAMPLES = Path(__file__).resolve().parents[2] / "bundles" / "examples" / "warehouse-monitor"
STEP = 0.05
WAIT_S = 240.0  # for any one condition: a bound only (120 s was the old step count unloaded)


class Hub:
    """`signalbeam-hub init` + `run` in a temp dir, stopped by its PID."""

    def __init__(self, data: Path, seed: Callable[[Store], None] | None = None) -> None:
        self.ports = {n: free_port() for n in ("client", "leafnode", "monitor", "http")}
        flags = [
            "--client-port", str(self.ports["client"]),
            "--leafnode-port", str(self.ports["leafnode"]),
            "--monitor-port", str(self.ports["monitor"]),
            "--http-port", str(self.ports["http"]),
            "--host", "127.0.0.1", "--http-host", "127.0.0.1", "--public-host", "127.0.0.1",
            "--no-litestream", "--allow-unsigned-bundles",
        ]  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-m", "hub.cli", "init", "--data", str(data), "--json", *flags],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        init = json.loads(out.stdout)
        self.key: str = init["admin_key"]
        self.url: str = init["operator_url"]
        if seed is not None:
            store = Store.open(data / "hub.db")
            try:
                seed(store)
            finally:
                store.close()
        self.data = data
        self.proc: ManagedProcess = self.start()

    def start(self) -> ManagedProcess:
        """Run the hub (again: same data, same ports)."""
        self.proc = ManagedProcess(
            "hub",
            [sys.executable, "-m", "hub.cli", "run", "--data", str(self.data)],
            self.data.parent / "hub.log",
        )
        self.proc.wait_ready(self._ready, timeout=60)
        return self.proc

    def stop(self) -> int | None:
        return self.proc.stop(timeout=30)

    def _ready(self) -> bool:
        url = f"http://127.0.0.1:{self.ports['http']}/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return bool(resp.status == 200)
        except urllib.error.URLError:
            return False

    def app(self, key: str | None = None) -> SignalBeamApp:
        # A long poll: what the tests see live arrived through change notices.
        return SignalBeamApp(HubSession(self.url, key or self.key), poll_seconds=3600)

    def client(self) -> HubClient:
        return HubClient(self.url, self.key, timeout=30)


def seed(store: Store) -> None:
    now = time.time()
    for i in range(5):
        store.upsert_device(
            f"dev-{i}", "acme", hostname=f"host-{i}", arch="arm64", os="linux",
            engine="podman", agent_version="0.1.0", tags=["rpi"] if i < 3 else ["x86"],
        )  # fmt: skip
    store.set_device_status("dev-0", "online", time.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    store.set_reported(
        "dev-0",
        {
            "bundle_ref": "warehouse-monitor@1.2.0",
            "containers": [
                {"name": "temp-sensor", "state": "running", "health": "healthy"},
                {"name": "relay-controller", "state": "running", "health": None},
            ],
        },
    )
    minute = int(now) // 60 * 60
    store.put_metrics(
        "1m",
        "dev-0",
        [(n, minute - 60 * i, 0.0, float(i % 9), 9.0) for i in range(30) for n in ("cpu", "mem")],
    )
    for k in range(20):
        store.add_event("dev-0", "container_started", f"seeded event {k}")


async def wait_for(pilot: Pilot[Any], check: Callable[[], bool], what: str) -> None:
    """``eventually`` in a Textual test: the pilot's pause lets the app run between polls,
    and a widget not mounted yet (any exception) counts as "not yet"."""
    await eventually(check, what, timeout=WAIT_S, interval=STEP, tolerate=(Exception,),
                     pause=pilot.pause)  # fmt: skip


def rows(table: DataTable[Any]) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def text(widget: Static) -> str:
    return str(widget.content)


def view_loaded(app: SignalBeamApp, selector: str, times: int = 1) -> Callable[[], bool]:
    return lambda: app.screen.query_one(selector, HubView).loads >= times
