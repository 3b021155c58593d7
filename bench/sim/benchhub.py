"""A real ``signalbeam-hub run`` for the fleet benchmarks, with the bulk path they need.

Bulk path (benchmarks only): devices are written into the hub's SQLite through its own
store API (``Store.upsert_device``) before the hub starts, instead of one enrollment request
each (each rewrites the nats-server config and reloads it; docs/performance.md has the
measured rate). Such devices have no NATS user of their own: the simulator carries them over
a few shared connections as the hub's own user (``SimOptions.connections``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from tests.harness.binaries import require_binary
from tests.harness.ports import free_port
from tests.harness.procs import ManagedProcess
from tests.integration.test_hub_api import HubProcess

# The bulk seed, run by the hub's own code (``code_root``'s when given: a baseline commit's
# store may not open a DB that a newer store migrated).
_SEED = """
import json, sys, time
from hub.store import Store
a = json.loads(sys.stdin.read())
store = Store.open(a["db"])
t0 = time.perf_counter()
try:
    for d in a["ids"]:
        store.upsert_device(d, "bench", hostname=d, arch="x86_64", engine="podman",
                            agent_version="0.1.0-sim", tags=a["tags"], status="offline")
finally:
    store.close()
print(time.perf_counter() - t0)
"""


def code_env(code_root: Path | None) -> dict[str, str]:
    """The environment that makes ``python -m hub.cli`` run the hub code in ``code_root``
    (an exported snapshot of a baseline commit) rather than this tree's: its path first, and
    ``PYTHONSAFEPATH`` so the working directory is not put ahead of it."""
    if code_root is None:
        return {}
    return {"PYTHONPATH": str(code_root), "PYTHONSAFEPATH": "1"}


class BenchHub(HubProcess):
    """``code_root``: run init, the seed and the hub from that source tree (the benchmark's
    same-run baseline of an older commit); None: this tree's code."""

    def __init__(
        self,
        data: Path,
        *,
        seed_devices: list[str] | tuple[str, ...] = (),
        tags: tuple[str, ...] = ("bench",),
        grace: int = 90,
        litestream: bool = False,
        init_flags: tuple[str, ...] = (),
        code_root: Path | None = None,
    ) -> None:
        self.grace = grace
        self.seed_seconds = 0.0
        self.code_root = code_root
        self._seed_ids = list(seed_devices)
        self._seed_tags = list(tags)
        self._seeded = False
        saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "PYTHONSAFEPATH")}
        os.environ.update(code_env(code_root))  # HubProcess runs `init` with our environment
        try:
            super().__init__(data, litestream=litestream, init_flags=init_flags)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _seed(self) -> None:
        self._seeded = True
        if not self._seed_ids:
            return
        r = subprocess.run(
            [sys.executable, "-c", _SEED],
            input=json.dumps({"db": str(self.data / "hub.db"), "ids": self._seed_ids,
                              "tags": self._seed_tags}),
            capture_output=True, text=True, timeout=600, check=True,
            env={**os.environ, **code_env(self.code_root)},
        )  # fmt: skip
        self.seed_seconds = float(r.stdout.strip().splitlines()[-1])

    def start(self) -> None:
        if not self._seeded:
            self._seed()
        self.proc = ManagedProcess(
            "hub",
            [sys.executable, "-m", "hub.cli", "run", "--data", str(self.data),
             "--offline-grace", str(self.grace)],
            self.data.parent / f"{self.data.name}-hub.log", env=code_env(self.code_root),
        )  # fmt: skip
        self.proc.wait_ready(lambda: self.http("/health/ready")[0] == 200, timeout=120)

    @property
    def client_url(self) -> str:
        return f"nats://127.0.0.1:{self.ports['client']}"

    @property
    def enroll_url(self) -> str:
        return str(self.init["enroll_url"])

    def secret(self, name: str) -> str:
        return str(json.loads((self.data / "secrets.json").read_text())[name])

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.data / 'hub.db'}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def db_bytes(self) -> int:
        """Bytes the database holds (pages in use, WAL included), not the file sizes."""
        rows = self.query(
            "SELECT page_count * page_size, freelist_count * page_size"
            " FROM pragma_page_count(), pragma_page_size(), pragma_freelist_count()"
        )
        return int(rows[0][0] - rows[0][1])

    def processes(self) -> list[psutil.Process]:
        assert self.proc is not None
        p = psutil.Process(self.proc.pid)
        return [p, *p.children(recursive=True)]

    def replica_has(self, sql: str, params: tuple[Any, ...]) -> tuple[bool, float]:
        """Restore the litestream replica to a temp file and run ``sql`` there: (found,
        seconds the restore took)."""
        url = "file://" + str(self.data / "replica")
        with tempfile.TemporaryDirectory(prefix="sb-restore-") as tmp:
            out = Path(tmp) / "r.db"
            t0 = time.perf_counter()
            r = subprocess.run(
                [require_binary("litestream"), "restore", "-o", str(out), url],
                capture_output=True, text=True, timeout=120, env={**os.environ},
            )  # fmt: skip
            took = time.perf_counter() - t0
            if r.returncode != 0 or not out.exists():
                return False, took
            conn = sqlite3.connect(str(out))
            try:
                return bool(conn.execute(sql, params).fetchall()), took
            finally:
                conn.close()


class BenchWorkersHub(BenchHub):
    """``signalbeam-hub nats`` and ``workers`` hub processes (``run --worker I/M``) on one
    data dir instead of the one hub (docs/architecture.md "Scale path"). ``proc`` is the
    first worker (the profile's target); ``processes`` all of them and their children."""

    def __init__(self, data: Path, *, workers: int, **kw: Any) -> None:
        self.workers = workers
        self.nats: ManagedProcess | None = None
        self.worker_procs: list[ManagedProcess] = []
        super().__init__(data, **kw)

    def start(self) -> None:
        if not self._seeded:
            self._seed()
        d = str(self.data)
        env = code_env(self.code_root)
        self.nats = ManagedProcess(
            "hub-nats", [sys.executable, "-m", "hub.cli", "nats", "--data", d],
            self.data.parent / "hub-nats.log", env=env,
        )  # fmt: skip
        self.nats.wait_ready(lambda: (self.data / "nats" / "nats-server.pid").exists(), 120)
        for i in range(self.workers):
            port = self.ports["http"] if i == 0 else free_port()
            proc = ManagedProcess(
                f"hub-worker-{i}",
                [sys.executable, "-m", "hub.cli", "run", "--data", d, "--worker",
                 f"{i}/{self.workers}", "--http-port", str(port),
                 "--offline-grace", str(self.grace)],
                self.data.parent / f"hub-worker-{i}.log", env=env,
            )  # fmt: skip
            self.worker_procs.append(proc)
        for proc in self.worker_procs:
            proc.wait_ready(lambda: True, timeout=5)
        self.proc = self.worker_procs[0]
        self.proc.wait_ready(lambda: self.http("/health/ready")[0] == 200, timeout=120)

    def processes(self) -> list[psutil.Process]:
        out: list[psutil.Process] = []
        for proc in [*self.worker_procs, *([self.nats] if self.nats else [])]:
            try:
                p = psutil.Process(proc.pid)
                out += [p, *p.children(recursive=True)]
            except psutil.Error:
                pass
        return out

    def stop(self) -> int | None:
        codes = [proc.stop(timeout=30) for proc in self.worker_procs]
        if self.nats is not None:
            codes.append(self.nats.stop(timeout=30))
        return max((c or 0 for c in codes), default=0)


def parse_cpus(text: str) -> set[int]:
    """ "0", "0,2", "0-3" -> a CPU set (os.sched_setaffinity's)."""
    cpus: set[int] = set()
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def pin(procs: list[psutil.Process], cpus: set[int]) -> None:
    """Pin these processes (and so whatever they start later) to ``cpus``."""
    for p in procs:
        try:
            p.cpu_affinity(sorted(cpus))
        except psutil.Error:
            pass


class CpuMeter:
    """CPU seconds of a set of processes over a window, as % of one core."""

    def __init__(self, procs: list[psutil.Process]) -> None:
        self.procs = procs
        self.t0 = time.monotonic()
        self.c0 = self._cpu()

    def _cpu(self) -> float:
        total = 0.0
        for p in self.procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def percent(self) -> float:
        return 100.0 * (self._cpu() - self.c0) / max(1e-9, time.monotonic() - self.t0)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
