"""Private container engines for tests: ``podman system service`` and ``dockerd``.

Each runs on its own unix socket with its own storage under the test's temp dir, so tests
never see or touch the machine's own containers. Teardown removes, by label, only the
containers tests create (agent-managed ones carry ``io.signalbeam.device``; harness-made
ones carry ``sbtest.owner``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.binaries import find_binary, require_binary
from tests.harness.procs import ManagedProcess

OWNED_LABELS = ("io.signalbeam.device", "sbtest.owner")


def _unix_request(
    socket_path: Path, method: str, path: str, timeout: float = 2.0
) -> tuple[int, bytes]:
    """One HTTP request to an engine API on a unix socket: (status, body)."""
    import http.client
    import socket

    class _Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(str(socket_path))
            self.sock = s

    conn = _Conn("localhost", timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class EngineHandle:
    """What a test gets: which engine, where its socket is, and its process."""

    kind: str  # "podman" | "docker"
    socket: Path
    proc: ManagedProcess
    workdir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def ping(self) -> bool:
        status, _ = _unix_request(self.socket, "GET", "/_ping")
        return status == 200

    def containers(self, label: str | None = None, all_: bool = True) -> list[dict[str, Any]]:
        query: dict[str, str] = {"all": "1" if all_ else "0"}
        if label:
            query["filters"] = json.dumps({"label": [label]})
        status, body = _unix_request(
            self.socket, "GET", "/containers/json?" + urllib.parse.urlencode(query), timeout=30
        )
        if status != 200:
            raise RuntimeError(f"{self.kind}: list containers -> {status}: {body[:200]!r}")
        result: list[dict[str, Any]] = json.loads(body)
        return result

    def repo_digests(self, image: str) -> list[str]:
        """The ``name@sha256:…`` references the engine knows an image by. A container's
        ``Image`` field is not one: Podman names it by the first tag the image was pulled
        under, even when the container was created from ``name@digest``."""
        status, body = _unix_request(
            self.socket, "GET", f"/images/{urllib.parse.quote(image, safe='')}/json", timeout=30
        )
        if status != 200:
            raise RuntimeError(f"{self.kind}: inspect image {image} -> {status}: {body[:200]!r}")
        return [str(d) for d in json.loads(body).get("RepoDigests") or []]

    def remove_test_containers(self) -> int:
        """Force-remove every container carrying one of the harness-owned labels; no others."""
        removed = 0
        for label in OWNED_LABELS:
            for c in self.containers(label):
                with contextlib.suppress(Exception):
                    _unix_request(
                        self.socket, "DELETE", f"/containers/{c['Id']}?force=1&v=1", timeout=30
                    )
                    removed += 1
        return removed

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.remove_test_containers()
        self.proc.stop(timeout=20)
        kill_leftovers(self.workdir)
        unmount_below(self.workdir)
        if "runroot" in self.extra:
            shutil.rmtree(self.extra["runroot"], ignore_errors=True)


def kill_leftovers(path: Path) -> None:
    """Kill what the engine left running on its private storage: Podman's container and
    exec monitors (conmon; an API exec's is kept 300 s) outlive ``podman system service``.
    Matching the private root means only this engine's processes can be hit."""
    import psutil

    root = str(path.resolve())
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(root in arg for arg in cmdline) and proc.pid != os.getpid():
            with contextlib.suppress(psutil.Error):
                proc.kill()


def unmount_below(path: Path) -> None:
    """Lazily unmount whatever an engine left mounted under ``path`` (dockerd leaves its
    ``exec/netns/default`` nsfs mount behind), so pytest can delete its temp dirs."""
    prefix = str(path.resolve()) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    for mountpoint in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", mountpoint], capture_output=True, timeout=10)


def podman_available() -> bool:
    return find_binary("podman") is not None and find_binary("runc") is not None


def docker_available() -> bool:
    return find_binary("dockerd") is not None


def start_podman(workdir: Path, registries_conf: Path | None = None) -> EngineHandle:
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "podman.sock"
    # Podman refuses a runroot path longer than 50 characters; pytest's tmp paths are longer.
    runroot = tempfile.mkdtemp(prefix="sb-rr-")
    argv = [
        require_binary("podman"),
        "--root",
        str(workdir / "root"),
        "--runroot",
        runroot,
        "--storage-driver",
        "vfs",
        "--runtime",
        "runc",
        "system",
        "service",
        "--time=0",
        f"unix://{sock}",
    ]
    env = {"CONTAINERS_REGISTRIES_CONF": str(registries_conf)} if registries_conf else {}
    proc = ManagedProcess("podman-service", argv, workdir / "podman.log", env=env)
    handle = EngineHandle("podman", sock, proc, workdir, extra={"runroot": runroot})
    proc.wait_ready(lambda: sock.exists() and handle.ping(), timeout=30)
    return handle


def start_docker(workdir: Path) -> EngineHandle:
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "docker.sock"
    argv = [
        require_binary("dockerd"),
        "--host",
        f"unix://{sock}",
        "--data-root",
        str(workdir / "data"),
        "--exec-root",
        str(workdir / "exec"),
        "--pidfile",
        str(workdir / "docker.pid"),
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
    ]
    proc = ManagedProcess("dockerd", argv, workdir / "dockerd.log")
    handle = EngineHandle("docker", sock, proc, workdir)
    proc.wait_ready(lambda: sock.exists() and handle.ping(), timeout=60)
    return handle


def run_cli(handle: EngineHandle, *args: str, timeout: float = 120) -> str:
    """Run the docker CLI against the handle's socket (works for Podman's compat API too)."""
    docker = find_binary("docker")
    if docker is None:
        raise RuntimeError("docker CLI not found")
    res = subprocess.run(
        [docker, "-H", handle.url, *args], capture_output=True, text=True, timeout=timeout
    )
    if res.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {res.stderr}")
    return res.stdout
