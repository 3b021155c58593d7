"""The Engine over the Docker Engine API, via aiodocker (async, on aiohttp).

Docker's socket and Podman's Docker-compatible socket both speak this API, so this class is
the whole Docker adapter and the base of the Podman one. aiodocker rather than the docker SDK:
the SDK is synchronous (requests in threads) and costs ~20 MB of RSS on a device; aiodocker
rides on the aiohttp the agent already imports.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError

from agent.errors import EngineError, EngineUnavailable, PullError
from agent.runtime.base import (
    LABEL_BUNDLE,
    LABEL_DEVICE,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    LABEL_VERSION,
    ContainerStats,
    CreateRequest,
    Engine,
    EngineEvent,
    EngineInfo,
    EngineKind,
    ExecResult,
    ImageHealthcheck,
    ImageInfo,
    ObservedContainer,
    PortBinding,
    PullCallback,
    PullProgress,
    RegistryAuth,
)

log = logging.getLogger(__name__)


class ApiError(EngineError):
    """The engine answered a call with an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


_STATES = {"created", "running", "paused", "restarting", "removing", "exited", "dead"}
_HEALTH = {"starting", "healthy", "unhealthy"}
_EXEC_OUTPUT_MAX = 4096
_NS = 1_000_000_000


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
        host_config["NanoCpus"] = int(req.cpus * _NS)
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


def _auth_header(auth: RegistryAuth) -> str:
    doc = {"username": auth.username, "password": auth.password, "serveraddress": auth.server}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def _split_ref(image: str) -> tuple[str, str | None]:
    """``repo[:tag][@digest]`` -> (fromImage, tag); a bare name means ``latest``."""
    if "@" in image:
        return image, None
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"


class DockerApiEngine(Engine):
    """An Engine over one Docker-API socket, seeing only ``device_id``'s containers."""

    kind: EngineKind = "docker"

    def __init__(self, url: str, device_id: str, *, request_timeout: float = 30.0) -> None:
        if not device_id:
            raise ValueError("device_id must not be empty")
        self.url = url
        self.device_id = device_id
        self._client = aiodocker.Docker(
            url=url, timeout=aiohttp.ClientTimeout(total=request_timeout, connect=5)
        )
        self._info: EngineInfo | None = None

    async def close(self) -> None:
        await self._client.close()

    # -- plumbing ----------------------------------------------------------------------
    async def _json(self, path: str, method: str = "GET", **kw: Any) -> Any:
        try:
            return await self._client._query_json(path, method, **kw)
        except DockerError as exc:
            if exc.status == 900:
                raise EngineUnavailable(
                    f"engine at {self.url} does not answer", [self.url]
                ) from exc
            raise ApiError(f"{method} {path}: {exc.status} {exc.message}", exc.status) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineUnavailable(f"engine at {self.url}: {exc}", [self.url]) from exc

    def _label_filter(self) -> str:
        return json.dumps({"label": [f"{LABEL_DEVICE}={self.device_id}"]})

    async def info(self) -> EngineInfo:
        version = await self._json("version")
        info = await self._json("info")
        self._info = EngineInfo(
            kind=self.kind,
            version=str(version.get("Version", "")),
            api_version=str(version.get("ApiVersion", "")),
            url=self.url,
            data_root=self._data_root(info),
        )
        return self._info

    def _data_root(self, info: dict[str, Any]) -> str | None:
        root = info.get("DockerRootDir")
        return str(root) if root else None

    # -- containers --------------------------------------------------------------------
    async def _inspect_raw(self, ref: str) -> dict[str, Any] | None:
        try:
            data = await self._json(f"containers/{ref}/json")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return data if isinstance(data, dict) else None

    async def list_containers(self) -> list[ObservedContainer]:
        rows = await self._json(
            "containers/json", params={"all": "1", "filters": self._label_filter()}
        )
        ids = [
            str(r["Id"])
            for r in rows
            if (r.get("Labels") or {}).get(LABEL_DEVICE) == self.device_id
        ]
        found = await asyncio.gather(*(self.inspect(i) for i in ids))
        return [c for c in found if c is not None]

    async def inspect(self, ref: str) -> ObservedContainer | None:
        data = await self._inspect_raw(ref)
        if data is None:
            return None
        obs = observed_from_inspect(data)
        if obs is None or obs.device != self.device_id:
            return None
        return obs

    async def _ours(self, ref: str) -> ObservedContainer:
        obs = await self.inspect(ref)
        if obs is None:
            raise EngineError(f"container {ref} is not one of device {self.device_id}'s")
        return obs

    async def create(self, req: CreateRequest) -> str:
        if req.labels.get(LABEL_DEVICE) != self.device_id:
            raise EngineError(
                f"refusing to create {req.name}: its {LABEL_DEVICE} label is not {self.device_id!r}"
            )
        data = await self._json(
            "containers/create", "POST", params={"name": req.name}, data=self._create_body(req)
        )
        return str(data["Id"])

    def _create_body(self, req: CreateRequest) -> dict[str, Any]:
        # Docker's exec leaves nothing behind, and dockerd would run a stored health check on
        # its own schedule besides the agent's: the exec probe stays with the agent.
        return create_body(req)

    async def start(self, ref: str) -> None:
        obs = await self._ours(ref)
        if obs.state == "running":
            return
        try:
            await self._json(f"containers/{obs.id}/start", "POST")
        except ApiError as exc:
            if exc.status != 304:  # 304: already started
                raise

    async def stop(self, ref: str, timeout: float = 10.0) -> None:
        obs = await self.inspect(ref)
        if obs is None or obs.state not in ("running", "restarting", "paused"):
            return
        # A stop that errors (e.g. Podman's "running or paused, refusing to clean up" when it
        # races the container's own exit) is judged by the state that follows, not by the error.
        with contextlib.suppress(EngineError, DockerError):
            await self._client._query_json(
                f"containers/{obs.id}/stop",
                "POST",
                params={"t": str(int(timeout))},
                timeout=aiohttp.ClientTimeout(total=timeout + 30),
            )
        after = await self.inspect(obs.id)
        if after is not None and after.state == "running":
            raise EngineError(f"container {obs.name} did not stop")

    async def remove(self, ref: str) -> None:
        obs = await self.inspect(ref)
        if obs is None:
            return
        try:
            await self._json(f"containers/{obs.id}", "DELETE", params={"force": "1", "v": "0"})
        except ApiError as exc:
            # Gone already, or an engine-side removal in progress: both end in "absent".
            if exc.status == 404 or "already in progress" in str(exc):
                return
            raise

    async def exec(self, ref: str, argv: Sequence[str], timeout: float) -> ExecResult:
        return await self._exec_session(await self._ours(ref), argv, timeout)

    async def _exec_session(
        self, obs: ObservedContainer, argv: Sequence[str], timeout: float
    ) -> ExecResult:
        """Run ``argv`` through an API exec session and read its exit code."""
        created = await self._json(
            f"containers/{obs.id}/exec",
            "POST",
            data={"AttachStdout": True, "AttachStderr": True, "Tty": False, "Cmd": list(argv)},
        )
        exec_id = str(created["Id"])
        output = b""
        try:
            async with asyncio.timeout(timeout):
                async with self._client._query(
                    f"exec/{exec_id}/start",
                    "POST",
                    data=json.dumps({"Detach": False, "Tty": False}),
                    timeout=aiohttp.ClientTimeout(total=timeout + 5),
                ) as resp:
                    output = await resp.read()
                # The exit code can lag the stream's end by a moment.
                for _ in range(50):
                    detail = await self._json(f"exec/{exec_id}/json")
                    if not detail.get("Running"):
                        code = detail.get("ExitCode")
                        return ExecResult(int(code) if code is not None else -1, _demux(output))
                    await asyncio.sleep(0.02)
        except TimeoutError:
            return ExecResult(-1, f"timed out after {timeout}s")
        except DockerError as exc:
            raise EngineError(f"exec in {obs.name}: {exc.message}") from exc
        return ExecResult(-1, "exec did not finish")

    async def image_healthcheck(self, ref: str) -> ImageHealthcheck | None:
        data = await self._inspect_raw(ref)
        if data is None:
            return None
        hc = (data.get("Config") or {}).get("Healthcheck") or {}
        return healthcheck_from_config(hc)

    async def logs(
        self,
        ref: str,
        *,
        tail: int | None = None,
        since: float | None = None,
        follow: bool = False,
    ) -> AsyncIterator[str]:
        obs = await self._ours(ref)
        container = self._client.containers.container(obs.id)
        params: dict[str, Any] = {}
        if tail is not None:
            params["tail"] = str(tail)
        if since is not None:
            params["since"] = str(int(since))
        if follow:
            async for line in container.log(stdout=True, stderr=True, follow=True, **params):
                yield line
        else:
            for line in await container.log(stdout=True, stderr=True, **params):
                yield line

    async def stats(self, ref: str) -> ContainerStats:
        obs = await self._ours(ref)
        # Read the body ourselves: Podman omits the JSON content type on this endpoint.
        try:
            async with self._client._query(
                f"containers/{obs.id}/stats", params={"stream": "false"}
            ) as resp:
                body = await resp.read()
        except DockerError as exc:
            raise ApiError(f"stats {obs.name}: {exc.message}", exc.status) from exc
        try:
            raw = json.loads(body)
        except ValueError as exc:
            raise EngineError(f"stats {obs.name}: not JSON: {body[:100]!r}") from exc
        return stats_from_raw(obs.id, raw)

    async def events(self) -> AsyncIterator[EngineEvent]:
        filters = json.dumps({"type": ["container"], "label": [f"{LABEL_DEVICE}={self.device_id}"]})
        # Without "since" Podman 4 replays its whole event log (old exits would look like new
        # crashes); with it both engines send only what happens from now on.
        since = time.time()
        try:
            async with self._client._query(
                "events",
                params={"filters": filters, "since": str(int(since))},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None, connect=5),
            ) as resp:
                async for raw in resp.content:
                    line = raw.strip()
                    if not line:
                        continue
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    out = event_from_raw(ev, self.device_id)
                    if out is not None and out.time >= since - 1.0:
                        yield out
        except DockerError as exc:
            raise EngineUnavailable(
                f"event stream at {self.url}: {exc.message}", [self.url]
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineUnavailable(f"event stream at {self.url}: {exc}", [self.url]) from exc

    # -- images ------------------------------------------------------------------------
    async def pull(
        self,
        image: str,
        *,
        progress: PullCallback | None = None,
        auth: RegistryAuth | None = None,
    ) -> None:
        from_image, tag = _split_ref(image)
        params: dict[str, str] = {"fromImage": from_image}
        if tag:
            params["tag"] = tag
        headers = {"X-Registry-Auth": _auth_header(auth)} if auth else {}
        tally = PullTally(image)
        try:
            async with self._client._query(
                "images/create",
                "POST",
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=300, connect=10),
            ) as resp:
                async for msg in json_lines(resp.content):
                    if msg.get("error") or msg.get("errorDetail"):
                        detail = msg.get("error") or (msg.get("errorDetail") or {}).get("message")
                        raise PullError(f"pull {image}: {detail}")
                    snap = tally.feed(msg)
                    if snap is not None:
                        await report_progress(progress, snap)
        except DockerError as exc:
            if exc.status == 900:
                raise EngineUnavailable(
                    f"engine at {self.url} does not answer", [self.url]
                ) from exc
            raise PullError(f"pull {image}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise PullError(f"pull {image}: {exc}") from exc
        # Some engines end the stream without an error line although nothing arrived.
        if await self.image(image) is None:
            raise PullError(f"pull {image}: the engine finished but the image is not present")

    async def list_images(self) -> list[ImageInfo]:
        rows = await self._json("images/json")
        return [
            ImageInfo(
                id=str(r.get("Id", "")),
                tags=tuple(t for t in (r.get("RepoTags") or []) if t and t != "<none>:<none>"),
                size=int(r.get("Size") or 0),
            )
            for r in rows
        ]

    async def image(self, ref: str) -> ImageInfo | None:
        try:
            r = await self._json(f"images/{ref}/json")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return ImageInfo(
            id=str(r.get("Id", "")),
            tags=tuple(r.get("RepoTags") or ()),
            size=int(r.get("Size") or 0),
        )

    async def remove_image(self, ref: str) -> bool:
        try:
            await self._json(f"images/{ref}", "DELETE", params={"force": "0", "noprune": "0"})
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def disk_free(self) -> int | None:
        root = (self._info or await self.info()).data_root
        return disk_free_at(root)


def disk_free_at(path: str | None) -> int | None:
    if not path:
        return None
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


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
        return float(v) / _NS if v else default

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
    when = float(t) / _NS if t else float(ev.get("time") or time.time())
    return EngineEvent(
        action=action.split(":", 1)[0],
        container_id=str(actor.get("ID") or ev.get("id") or ""),
        service=attrs.get(LABEL_SERVICE),
        time=when,
        attributes=attrs,
    )


def _demux(raw: bytes) -> str:
    """Strip Docker's 8-byte stream frame headers when present (non-TTY exec output)."""
    out = bytearray()
    i = 0
    framed = len(raw) >= 8 and raw[0] in (0, 1, 2) and raw[1:4] == b"\x00\x00\x00"
    if not framed:
        return raw[:_EXEC_OUTPUT_MAX].decode(errors="replace")
    while i + 8 <= len(raw):
        size = int.from_bytes(raw[i + 4 : i + 8], "big")
        out += raw[i + 8 : i + 8 + size]
        i += 8 + size
    return bytes(out[:_EXEC_OUTPUT_MAX]).decode(errors="replace")


async def json_lines(content: aiohttp.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a streamed engine reply, one per line (pull progress); blank and
    torn lines are skipped, since engines flush mid-object under load."""
    async for raw in content:
        line = raw.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict):
            yield msg


async def report_progress(progress: PullCallback | None, snap: PullProgress) -> None:
    """Hand a progress snapshot to a sync or async callback."""
    if progress is None:
        return
    res = progress(snap)
    if asyncio.iscoroutine(res):
        await res
