"""The Engine over the Docker Engine API, via aiodocker (async, on aiohttp).

Docker's socket and Podman's Docker-compatible socket both speak this API, so this class is
the whole Docker adapter and the base of the Podman one. It sends and receives; what the
documents mean (inspect, create, stats, events, pull progress) is ``docker_wire``. aiodocker rather than the docker SDK:
the SDK is synchronous (requests in threads) and costs ~20 MB of RSS on a device; aiodocker
rides on the aiohttp the agent already imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError

from agent.errors import EngineError, EngineUnavailable, PullError
from agent.runtime.base import (
    LABEL_DEVICE,
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
    PullCallback,
    PullProgress,
    RegistryAuth,
)
from agent.runtime.docker_wire import (
    PullTally,
    auth_header,
    create_body,
    demux,
    event_from_raw,
    healthcheck_from_config,
    observed_from_inspect,
    split_ref,
    stats_from_raw,
)

log = logging.getLogger(__name__)


class ApiError(EngineError):
    """The engine answered a call with an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


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
                        return ExecResult(int(code) if code is not None else -1, demux(output))
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
        from_image, tag = split_ref(image)
        params: dict[str, str] = {"fromImage": from_image}
        if tag:
            params["tag"] = tag
        headers = {"X-Registry-Auth": auth_header(auth)} if auth else {}
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
