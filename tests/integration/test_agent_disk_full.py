"""A real agent process on a real full filesystem (a small tmpfs mounted for the test).

The agent must start on a full disk the same way every time, however its last run ended
(clean stop or kill -9), serve reads, say "store: disk full" on /health/ready (and in
/v1/status, its HTML page and `signalbeam-agent status`), refuse writes with 507 in the one
error shape, and heal by itself once space is freed. A first start with
no store and no space fails the same way every time, saying why.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.ports import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "bundles" / "examples" / "warehouse-monitor" / "1.2.0.yaml"
MOUNT_SIZE = "8m"


@contextlib.contextmanager
def tmpfs(where: Path) -> Iterator[Path]:
    """A fresh tmpfs of ``MOUNT_SIZE`` at ``where``, unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={MOUNT_SIZE},mode=0755", "tmpfs", str(where)],
        check=True,
        timeout=30,
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True, timeout=30)


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "mnt") as where:
        yield where


def fill(where: Path) -> Path:
    """Write a filler file until the filesystem refuses (bounded by its size)."""
    filler = where / "filler"
    block = b"\0" * (64 * 1024)
    with open(filler, "wb", buffering=0) as fh:
        for _ in range(10_000):  # 8 MiB / 64 KiB = 128 writes; the bound is a backstop
            try:
                fh.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        else:
            raise AssertionError("the filesystem never filled")
    # Smaller pieces too, so not even a page is left.
    for i in range(1000):
        try:
            with open(where / f"crumb-{i}", "wb", buffering=0) as fh:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            break
    st = os.statvfs(where)
    assert st.f_bfree * st.f_frsize < 64 * 1024
    return filler


class AgentProc:
    def __init__(self, tmp: Path, data_dir: Path) -> None:
        self.port = free_port()
        self.config = tmp / "agent.toml"
        self.config.write_text(
            f"""
data_dir = "{data_dir}"
device_id = "full-dev"
engine_socket = "unix://{tmp}/no-engine.sock"
[metrics]
interval = "200ms"
[http]
port = {self.port}
"""
        )
        self.log = tmp / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )

    def start(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(self.config)],
                stdout=log,
                stderr=log,
                cwd=REPO,
                start_new_session=True,
            )
        return self.proc

    def wait_up(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"agent exited {self.proc.returncode}:\n{self.tail()}"
            if self.call("GET", "/health/live")[0] == 200:
                return
            time.sleep(0.2)
        raise AssertionError(f"the agent's API did not come up in 60 s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        rc = self.proc.wait(timeout=60)
        self.proc = None
        return rc

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])

    def page(self, token: str) -> str:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/")
        req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=30) as r:
            return str(r.read().decode())

    def disk(self, token: str) -> dict[str, Any]:
        status, _, body = self.call("GET", "/v1/status", token)
        assert status == 200, body
        return dict(body["disk"])

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: bytes | None = None,
        ctype: str = "application/json",
    ) -> tuple[int | None, str, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if body is not None:
            req.data = body
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.headers.get("Content-Type", ""), json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type", ""), json.loads(e.read() or b"null")
        except OSError:
            return None, "", None


@pytest.fixture
def agent(tmp_path: Path, mount: Path) -> Iterator[AgentProc]:
    a = AgentProc(tmp_path, mount / "data")
    try:
        yield a
    finally:
        if a.proc is not None and a.proc.poll() is None:
            a.stop(signal.SIGKILL)


def assert_disk_full_error(status: int | None, ctype: str, body: Any) -> None:
    assert status == 507, (status, body)
    assert ctype.startswith("application/json")
    assert set(body) == {"error"}
    assert body["error"]["code"] == "insufficient_storage"
    assert body["error"]["message"].startswith("disk full"), body


def test_full_disk_start_is_the_same_every_time_and_heals(agent: AgentProc, mount: Path) -> None:
    agent.start()
    agent.wait_up()
    token = agent.cli("token", "create", "--name", "tech", "--role", "admin").stdout.strip()
    assert token.startswith("sbt_")
    status, _, body = agent.call(
        "POST", "/v1/local/desired", token, EXAMPLE.read_bytes(), "application/yaml"
    )
    assert status == 201, body
    spare = agent.cli("token", "create", "--name", "spare", "--role", "viewer").stdout.strip()
    spare_id = spare.split("_")[1]
    assert agent.stop() == 0

    filler = fill(mount)
    # Both ways a run can end, twice: a clean stop removes SQLite's WAL index, a kill
    # leaves it; the next start on the full disk must not depend on which.
    for ending in (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL):
        agent.start()
        agent.wait_up()
        status, _, body = agent.call("GET", "/health/ready")
        assert status == 503, body
        assert body["error"]["details"]["store"].startswith("disk full"), body
        # Every status view says so, in the words readiness uses.
        disk = agent.disk(token)
        assert disk["full"] is True and disk["reason"].startswith("disk full"), disk
        assert disk["free_bytes"] < 1024 * 1024, disk
        assert '<th>Disk</th><td class="bad">disk full: ' in agent.page(token)
        # The CLI says it too: in its disk line, or, when the agent holds the store alone
        # (opened exclusively on the full disk), in the error saying why it cannot read it.
        out = agent.cli("status")
        said = (
            "disk        disk full: " in out.stdout
            if out.returncode == 0
            else "disk full: " in out.stderr
        )
        assert said, (out.returncode, out.stdout, out.stderr)
        # Reads work: the stored desired state is there to run from.
        status, _, body = agent.call("GET", "/v1/desired", token)
        assert status == 200 and body["desired"]["source"] == "local", body
        # Every write is refused plainly, in the one error shape.
        assert_disk_full_error(*agent.call("POST", "/v1/reconcile", token, b""))
        assert_disk_full_error(
            *agent.call(
                "POST", "/v1/local/desired", token, EXAMPLE.read_bytes(), "application/yaml"
            )
        )
        assert_disk_full_error(
            *agent.call("POST", "/v1/tokens", token, b'{"name": "x", "role": "viewer"}')
        )
        assert_disk_full_error(*agent.call("DELETE", "/v1/local/desired", token))
        # Revoking a token is always tried: done (one row rewritten), or 507 from the write
        # itself, never refused up front.
        status, _, body = agent.call("DELETE", f"/v1/tokens/{spare_id}", token)
        if status != 200:
            assert_disk_full_error(status, "application/json", body)
            assert "bytes free" not in body["error"]["message"], body
        rc = agent.stop(ending)
        assert rc == (0 if ending == signal.SIGTERM else -signal.SIGKILL), agent.tail()

    # With no agent running the CLI reads the store itself, and says the disk is full.
    out = agent.cli("status")
    assert out.returncode == 0, out.stderr
    assert "disk        disk full: " in out.stdout, out.stdout

    # Space comes back while the agent runs: it heals without a restart.
    agent.start()
    agent.wait_up()
    filler.unlink()
    for crumb in mount.glob("crumb-*"):
        crumb.unlink()
    deadline = time.monotonic() + 60
    while agent.call("GET", "/health/ready")[2]["error"]["details"]["store"] != "ok":
        assert time.monotonic() < deadline, agent.tail()
        time.sleep(0.2)
    status, _, body = agent.call("POST", "/v1/tokens", token, b'{"name": "y", "role": "viewer"}')
    assert status == 201, body
    disk = agent.disk(token)
    assert disk["full"] is False and disk["reason"] is None and disk["free_bytes"] > 0, disk
    assert "<th>Disk</th><td>ok, " in agent.page(token)
    # The store is shared again: the CLI beside the running agent reads it.
    deadline = time.monotonic() + 60
    while (out := agent.cli("status", "--json")).returncode != 0:
        assert time.monotonic() < deadline, out.stderr
        time.sleep(0.5)
    assert json.loads(out.stdout)["desired"]["source"] == "local"
    assert json.loads(out.stdout)["disk"]["full"] is False
    assert "disk        ok, " in agent.cli("status").stdout
    assert agent.stop() == 0
    # A full disk is one warning per episode in the log, not a traceback per sample.
    assert "Traceback" not in agent.log.read_text(errors="replace"), agent.tail()


def test_first_start_without_space_fails_the_same_way_every_time(
    agent: AgentProc, mount: Path
) -> None:
    (mount / "data").mkdir()
    fill(mount)
    for _ in range(3):
        proc = agent.start()
        rc = proc.wait(timeout=60)
        agent.proc = None
        assert rc == 1, agent.tail()
        assert "disk full" in agent.tail().splitlines()[-1], agent.tail()
