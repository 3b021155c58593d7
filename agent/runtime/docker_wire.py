"""The Docker Engine API's JSON documents and the Engine's types, both ways (pure).

Inspect, stats and event documents become ``ObservedContainer``, ``ContainerStats`` and
``EngineEvent``; a ``CreateRequest`` becomes the ``containers/create`` body; pull progress
messages are tallied; exec output is de-framed. No aiodocker and no I/O, so every mapping is
tested without an engine (tests/integration/test_runtime_parse.py). The client that sends
and receives them is ``docker_api.DockerApiEngine``; Podman's differences are in ``podman``.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime
from typing import Any

from agent.runtime.base import (
    LABEL_BUNDLE,
    LABEL_DEVICE,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    LABEL_VERSION,
    ContainerStats,
    CreateRequest,
    EngineEvent,
    ImageHealthcheck,
    ObservedContainer,
    PortBinding,
    PullProgress,
    RegistryAuth,
)

_STATES = {"created", "running", "paused", "restarting", "removing", "exited", "dead"}
_HEALTH = {"starting", "healthy", "unhealthy"}
EXEC_OUTPUT_MAX = 4096
NS = 1_000_000_000


def parse_time(value: Any) -> float | None:
    """RFC 3339 with nanoseconds (Go's format) -> epoch seconds; the zero time -> None."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    text = value.replace("Z", "+00:00")
    # Python parses at most 6 fractional digits; Go writes up to 9.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        text = f"{head}.{(digits + '000000')[:6]}{rest[i:]}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _ports(inspect: dict[str, Any]) -> tuple[PortBinding, ...]:
    raw = (inspect.get("NetworkSettings") or {}).get("Ports") or {}
    out: list[PortBinding] = []
    for key, binds in sorted(raw.items()):
        port_s, _, proto = key.partition("/")
        try:
            cport = int(port_s)
        except ValueError:
            continue
        if not binds:
            out.append(PortBinding(cport, proto or "tcp", None, None))
            continue
        for b in binds:
            host = b.get("HostPort")
            out.append(
                PortBinding(
                    cport, proto or "tcp", b.get("HostIp") or None, int(host) if host else None
                )
            )
    return tuple(out)


def observed_from_inspect(data: dict[str, Any]) -> ObservedContainer | None:
    """Map a container inspect document; None if it lacks the labels that make it ours."""
    config = data.get("Config") or {}
    labels = config.get("Labels") or {}
    device = labels.get(LABEL_DEVICE)
    if not device:
        return None
    state = data.get("State") or {}
    status = str(state.get("Status") or "unknown").lower()
    # Podman reports "configured"/"stopped" where Docker says "created"/"exited".
    status = {"configured": "created", "stopped": "exited", "initialized": "created"}.get(
        status, status
    )
    health_raw = str(((state.get("Health") or {}).get("Status")) or "").lower()
    host_config = data.get("HostConfig") or {}
    return ObservedContainer(
        id=str(data.get("Id", "")),
        name=str(data.get("Name", "")).lstrip("/"),
        service=labels.get(LABEL_SERVICE, ""),
        bundle=labels.get(LABEL_BUNDLE, ""),
        version=labels.get(LABEL_VERSION, ""),
        spec_hash=labels.get(LABEL_SPEC_HASH, ""),
        device=device,
        state=status if status in _STATES else "unknown",  # type: ignore[arg-type]
        health=health_raw if health_raw in _HEALTH else "none",  # type: ignore[arg-type]
        exit_code=state.get("ExitCode") if status in ("exited", "dead") else None,
        restart_count=int(data.get("RestartCount") or 0),
        image=str(config.get("Image", "")),
        started_at=parse_time(state.get("StartedAt")),
        created_at=parse_time(data.get("Created")),
        ports=_ports(data),
        network_mode=str(host_config.get("NetworkMode") or ""),
        memory_limit=int(host_config.get("Memory") or 0) or None,
    )


def create_body(req: CreateRequest) -> dict[str, Any]:
    """The Docker API ``containers/create`` body for a request."""
    exposed: dict[str, dict[str, Any]] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for p in req.ports:
        key = f"{p.container}/{p.protocol}"
        exposed[key] = {}
        if p.host is not None:
            bindings.setdefault(key, []).append({"HostIp": p.host_ip, "HostPort": str(p.host)})
    host_config: dict[str, Any] = {
        "RestartPolicy": {"Name": req.restart},
        "NetworkMode": req.network_mode,
    }
    if bindings and req.network_mode != "host":
        host_config["PortBindings"] = bindings
    if req.mounts:
        host_config["Mounts"] = [
            {"Type": m.type, "Source": m.source, "Target": m.target, "ReadOnly": m.read_only}
            for m in req.mounts
        ]
    if req.memory is not None:
        host_config["Memory"] = req.memory
    if req.cpus is not None:
        host_config["NanoCpus"] = int(req.cpus * NS)
    body: dict[str, Any] = {
        "Image": req.image,
        "Labels": dict(req.labels),
        "Env": [f"{k}={v}" for k, v in sorted(req.env.items())],
        "HostConfig": host_config,
    }
    if exposed and req.network_mode != "host":
        body["ExposedPorts"] = exposed
    if req.command is not None:
        body["Entrypoint"] = list(req.command)
    if req.args is not None:
        body["Cmd"] = list(req.args)
    return body


class PullTally:
    """Turns the engine's per-layer progress messages into one running total."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.layers: dict[str, tuple[int, int]] = {}  # id -> (current, total)
        self.done: set[str] = set()
        self.status = "pulling"

    def feed(self, msg: dict[str, Any]) -> PullProgress | None:
        status = str(msg.get("status") or "")
        layer = msg.get("id")
        if not layer or status.startswith(("Pulling from", "Digest", "Status")):
            self.status = status or self.status
            return None
        layer = str(layer)
        detail = msg.get("progressDetail") or {}
        cur, tot = self.layers.get(layer, (0, 0))
        if status == "Downloading":
            cur = int(detail.get("current") or cur)
            tot = int(detail.get("total") or tot)
        elif status in ("Download complete", "Pull complete", "Already exists"):
            cur = tot
            self.done.add(layer)
        self.layers[layer] = (cur, tot)
        self.status = status
        return self.snapshot()

    def snapshot(self) -> PullProgress:
        return PullProgress(
            image=self.image,
            status=self.status,
            layers_total=len(self.layers),
            layers_done=len(self.done),
            current_bytes=sum(c for c, _ in self.layers.values()),
            total_bytes=sum(t for _, t in self.layers.values()),
        )


def auth_header(auth: RegistryAuth) -> str:
    doc = {"username": auth.username, "password": auth.password, "serveraddress": auth.server}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def split_ref(image: str) -> tuple[str, str | None]:
    """``repo[:tag][@digest]`` -> (fromImage, tag); a bare name means ``latest``."""
    if "@" in image:
        return image, None
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"


def healthcheck_from_config(hc: dict[str, Any]) -> ImageHealthcheck | None:
    test = list(hc.get("Test") or [])
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD":
        argv = tuple(str(a) for a in test[1:])
    elif test[0] == "CMD-SHELL":
        argv = ("/bin/sh", "-c", " ".join(str(a) for a in test[1:]))
    else:  # Podman sometimes stores the bare argv
        argv = tuple(str(a) for a in test)
    if not argv:
        return None

    def secs(key: str, default: float) -> float:
        v = hc.get(key)
        return float(v) / NS if v else default

    return ImageHealthcheck(
        command=argv,
        interval=secs("Interval", 30.0),
        timeout=secs("Timeout", 30.0),
        retries=int(hc.get("Retries") or 3),
        start_period=secs("StartPeriod", 0.0),
    )


def stats_from_raw(cid: str, raw: dict[str, Any]) -> ContainerStats:
    cpu = raw.get("cpu_stats") or {}
    pre = raw.get("precpu_stats") or {}
    cpu_delta = float((cpu.get("cpu_usage") or {}).get("total_usage") or 0) - float(
        (pre.get("cpu_usage") or {}).get("total_usage") or 0
    )
    sys_delta = float(cpu.get("system_cpu_usage") or 0) - float(pre.get("system_cpu_usage") or 0)
    ncpu = int(cpu.get("online_cpus") or 1)
    pct = (cpu_delta / sys_delta) * ncpu * 100.0 if sys_delta > 0 and cpu_delta > 0 else 0.0
    mem = raw.get("memory_stats") or {}
    limit = mem.get("limit")
    return ContainerStats(
        id=cid,
        cpu_percent=round(pct, 3),
        memory_bytes=int(mem.get("usage") or 0),
        memory_limit=int(limit) if limit else None,
    )


def event_from_raw(ev: dict[str, Any], device_id: str) -> EngineEvent | None:
    actor = ev.get("Actor") or {}
    attrs = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
    if attrs.get(LABEL_DEVICE) != device_id:
        return None
    action = str(ev.get("Action") or ev.get("status") or "")
    t = ev.get("timeNano")
    when = float(t) / NS if t else float(ev.get("time") or time.time())
    return EngineEvent(
        action=action.split(":", 1)[0],
        container_id=str(actor.get("ID") or ev.get("id") or ""),
        service=attrs.get(LABEL_SERVICE),
        time=when,
        attributes=attrs,
    )


def demux(raw: bytes) -> str:
    """Strip Docker's 8-byte stream frame headers when present (non-TTY exec output)."""
    out = bytearray()
    i = 0
    framed = len(raw) >= 8 and raw[0] in (0, 1, 2) and raw[1:4] == b"\x00\x00\x00"
    if not framed:
        return raw[:EXEC_OUTPUT_MAX].decode(errors="replace")
    while i + 8 <= len(raw):
        size = int.from_bytes(raw[i + 4 : i + 8], "big")
        out += raw[i + 8 : i + 8 + size]
        i += 8 + size
    return bytes(out[:EXEC_OUTPUT_MAX]).decode(errors="replace")
