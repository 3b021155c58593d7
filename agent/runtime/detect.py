"""Find the container engine: an explicit URL, else the usual sockets in a fixed order."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from agent.errors import EngineUnavailable
from agent.runtime.base import Engine, EngineKind

DEFAULT_SOCKETS = ("/run/podman/podman.sock", "/var/run/docker.sock")


def candidate_urls(explicit: str | None = None, env: Mapping[str, str] | None = None) -> list[str]:
    """Where to look, in order. An explicit URL is the only candidate: no silent fallback."""
    if explicit:
        return [_normalise(explicit)]
    env = os.environ if env is None else env
    out: list[str] = []
    if env.get("DOCKER_HOST"):
        out.append(_normalise(env["DOCKER_HOST"]))
    out += [f"unix://{p}" for p in DEFAULT_SOCKETS]
    if env.get("XDG_RUNTIME_DIR"):
        out.append(f"unix://{env['XDG_RUNTIME_DIR']}/podman/podman.sock")
    seen: set[str] = set()
    return [u for u in out if not (u in seen or seen.add(u))]  # type: ignore[func-returns-value]


def _normalise(url: str) -> str:
    return f"unix://{url}" if url.startswith("/") else url


def probe(url: str, timeout: float = 3.0) -> EngineKind | None:
    """Ask ``/version`` over a unix socket; the engine kind, or None if nothing answers.

    A blocking probe is fine: it runs once at start-up, before the loop does any work.
    """
    if not url.startswith("unix://"):
        return "docker"  # tcp engines: trust the URL, the first call will tell
    path = url[len("unix://") :]
    if not Path(path).exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(b"GET /version HTTP/1.0\r\nHost: engine\r\n\r\n")
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError:
        return None
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n", 1)[0]:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return "docker"
    components = [str(c.get("Name", "")) for c in doc.get("Components") or []]
    return "podman" if any("Podman" in c for c in components) else "docker"


def connect(
    device_id: str,
    url: str | None = None,
    *,
    kind: EngineKind | None = None,
    insecure_registries: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Engine:
    """An Engine for the first candidate that answers; ``EngineUnavailable`` names them all."""
    tried = candidate_urls(url, env)
    for candidate in tried:
        found = probe(candidate)
        if found is None:
            continue
        return engine_for(
            device_id, candidate, kind or found, insecure_registries=insecure_registries
        )
    raise EngineUnavailable("no container engine answered", tried)


def engine_for(
    device_id: str, url: str, kind: EngineKind, *, insecure_registries: Sequence[str] = ()
) -> Engine:
    """The client for an engine already probed (no second, blocking ``/version`` call)."""
    from agent.runtime.docker_api import DockerApiEngine
    from agent.runtime.podman import PodmanEngine

    if kind == "podman":
        return PodmanEngine(url, device_id, insecure_registries=insecure_registries)
    return DockerApiEngine(url, device_id)
