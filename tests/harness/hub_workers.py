"""Hub workers on loopback (docs/architecture.md "Scale path"): the data dir's
``signalbeam-hub nats`` and ``signalbeam-hub run --worker I/M`` processes sharing it.

``Workers(DataOnly(path, init_flags=...))`` lays out the data dir (``init`` only);
``with w.running(): ...`` starts the nats-server and every worker and stops them all after.
``owner`` reads the control-plane lease; ``metric`` one Prometheus figure of a worker.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from hub.config import DataDir, load, save
from protocol.subjects import LEASE_BUCKET, LEASE_KEY
from tests.harness.ports import free_port
from tests.harness.procs import ManagedProcess
from tests.harness.sync_hub import SyncHub

WORKERS = 2


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=30) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class DataOnly(SyncHub):
    """`signalbeam-hub init` only: the processes are the workers' (``Workers``)."""

    def start(self) -> None:
        pass


@dataclass
class Workers:
    """The data dir's nats-server and its ``count`` hub workers."""

    hub: SyncHub
    count: int = WORKERS
    nats: ManagedProcess | None = None
    procs: dict[int, ManagedProcess] = field(default_factory=dict)
    http: dict[int, int] = field(default_factory=dict)

    def configure(self, **changes: Any) -> None:
        """Change hub.toml before the start, as the deploy writes it (say ``workers``)."""
        data = DataDir(self.hub.data)
        cfg, sec = load(data)
        save(data, replace(cfg, **changes), sec)

    @contextmanager
    def running(self) -> Iterator[Workers]:
        try:
            self.start_nats()
            for i in range(self.count):
                self.start(i)
            yield self
        finally:
            self.stop()

    def start_nats(self) -> None:
        data = self.hub.data
        self.nats = ManagedProcess(
            "hub-nats",
            [sys.executable, "-m", "hub.cli", "nats", "--data", str(data)],
            data.parent / "nats-proc.log",
        )
        monitor = self.hub.ports["monitor"]

        def healthy() -> bool:
            url = f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    return bool(r.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        self.nats.wait_ready(healthy, timeout=60)

    def start(self, index: int) -> None:
        data = self.hub.data
        port = self.http.setdefault(index, free_port())
        proc = ManagedProcess(
            f"worker-{index}",
            [
                sys.executable,
                "-m",
                "hub.cli",
                "run",
                "--data",
                str(data),
                "--worker",
                f"{index}/{self.count}",
                "--http-port",
                str(port),
            ],
            data.parent / f"worker-{index}-{time.monotonic_ns()}.log",
        )
        self.procs[index] = proc
        proc.wait_ready(lambda: ready(port), timeout=60)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        if self.nats is not None:
            self.nats.stop()


async def owner(w: Workers) -> str | None:
    """The lease holder's name (``worker-I``), or None while nobody holds it."""
    nc = await w.hub.hub_nc()
    try:
        kv = await nc.jetstream().key_value(LEASE_BUCKET)
        try:
            entry = await kv.get(LEASE_KEY)
        except Exception:
            return None
        return str(json.loads(entry.value or b"{}").get("holder"))
    finally:
        await nc.close()


def metric(port: int, name: str, labels: str = "") -> float:
    """A worker's Prometheus figure ``name`` (``labels``: the exact ``{...}`` part, or
    empty for a metric without labels), summed over the lines that carry it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    want = f"{name}{labels} "
    return sum(
        float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(want)
    )
