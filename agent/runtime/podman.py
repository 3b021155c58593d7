"""Podman through its Docker-compatible socket, with the few places it differs from Docker.

Podman serves the Docker API on its socket and its own libpod API beside it; we use libpod only
where it adds something: the engine's data root (graphRoot), pulls from registries the
config marks insecure (``tlsVerify=false``, which the compat endpoint cannot express), and
running exec health probes without exec sessions.

Why not exec sessions for probes: every API exec session on Podman gets an exit command that
conmon runs ``exit_command_delay`` (300 s by default) after the command ended, so a client can
still read the exit code; until then a conmon pair per exec stays alive. Podman offers no call
that ends that wait (``/libpod/exec/{id}/remove``, 4.8+, drops the session but not the
conmon), so a device probing every few seconds piled up hundreds of processes. A container's
own health check, run on request (``/libpod/containers/{id}/healthcheck``), goes through
Podman's in-process exec, which removes its session and lets conmon exit as soon as the
command does. So the probe command is stored as the container's health check at create (the
image's HEALTHCHECK already is) and run that way; the agent still schedules and judges it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiodocker.exceptions import DockerError

from agent.errors import EngineError, EngineUnavailable, PullError
from agent.runtime.base import (
    CreateRequest,
    EngineKind,
    ExecResult,
    ImageHealthcheck,
    PullCallback,
    PullProgress,
    RegistryAuth,
)
from agent.runtime.docker_api import DockerApiEngine, json_lines, report_progress
from agent.runtime.docker_wire import (
    EXEC_OUTPUT_MAX,
    NS,
    auth_header,
    create_body,
    healthcheck_from_config,
    observed_from_inspect,
)

LIBPOD = "v4.0.0/libpod"
# Podman schedules a stored health check itself only under systemd (a transient timer); the
# agent runs the probe on its own schedule, so Podman's is pushed out of the way.
_OWN_SCHEDULE_NS = 24 * 3600 * NS


def podman_healthcheck(probe: ImageHealthcheck) -> dict[str, Any]:
    """The compat-API ``Healthcheck`` that stores ``probe`` with its argv intact.

    Podman's compat create joins ``Test`` with spaces and re-splits it on whitespace unless
    the joined string is a JSON array, so the argv travels as one JSON-array string (without
    the ``CMD`` keyword, which would send it down the splitting path again).
    """
    return {
        "Test": [json.dumps(list(probe.command))],
        "Interval": _OWN_SCHEDULE_NS,
        "Timeout": max(1, int(probe.timeout * NS)),
        "Retries": max(1, probe.retries),
        "StartPeriod": int(probe.start_period * NS),
    }


def healthcheck_result(inspect: dict[str, Any]) -> ExecResult | None:
    """The latest run in a libpod inspect's health log (Podman records exit 0 or 1)."""
    health = (inspect.get("State") or {}).get("Health") or {}
    log = health.get("Log") or []
    if not log or not isinstance(log[-1], dict):
        return None
    last = log[-1]
    code = last.get("ExitCode")
    output = str(last.get("Output") or "")
    return ExecResult(int(code) if code is not None else -1, output[-EXEC_OUTPUT_MAX:])


class PodmanEngine(DockerApiEngine):
    kind: EngineKind = "podman"

    def __init__(
        self,
        url: str,
        device_id: str,
        *,
        request_timeout: float = 30.0,
        insecure_registries: Sequence[str] = (),
    ) -> None:
        super().__init__(url, device_id, request_timeout=request_timeout)
        self.insecure_registries = frozenset(insecure_registries)

    def _create_body(self, req: CreateRequest) -> dict[str, Any]:
        body = create_body(req)
        if req.exec_probe is not None:
            body["Healthcheck"] = podman_healthcheck(req.exec_probe)
        return body

    async def exec(self, ref: str, argv: Sequence[str], timeout: float) -> ExecResult:
        data = await self._inspect_raw(ref)
        obs = observed_from_inspect(data) if data is not None else None
        if data is None or obs is None or obs.device != self.device_id:
            raise EngineError(f"container {ref} is not one of device {self.device_id}'s")
        stored = healthcheck_from_config((data.get("Config") or {}).get("Healthcheck") or {})
        if stored is None or stored.command != tuple(argv):
            # Not the container's own check (a container created before probes were stored,
            # or an ad-hoc command): an exec session, which Podman keeps for a while.
            return await self._exec_session(obs, argv, timeout)
        try:
            async with asyncio.timeout(timeout):
                await self._libpod(f"containers/{obs.id}/healthcheck")
                after = await self._libpod(f"containers/{obs.id}/json")
        except TimeoutError:
            return ExecResult(-1, f"timed out after {timeout}s")
        result = healthcheck_result(after) if isinstance(after, dict) else None
        return result or ExecResult(-1, "the health check left no result")

    async def _libpod(self, path: str, method: str = "GET", **kw: object) -> object:
        try:
            return await self._client._query_json(
                f"{LIBPOD}/{path}",
                method,
                versioned_api=False,
                **kw,  # type: ignore[arg-type]
            )
        except DockerError as exc:
            if exc.status == 900:
                raise EngineUnavailable(
                    f"engine at {self.url} does not answer", [self.url]
                ) from exc
            raise EngineError(f"{method} libpod/{path}: {exc.status} {exc.message}") from exc

    def _data_root(self, info: dict[str, object]) -> str | None:
        # The compat info has no DockerRootDir on Podman 4; graphRoot comes from libpod info.
        root = info.get("DockerRootDir")
        return str(root) if root else None

    async def disk_free(self) -> int | None:
        from agent.runtime.docker_api import disk_free_at

        info = await self.info()
        root = info.data_root
        if not root:
            lib = await self._libpod("info")
            if isinstance(lib, dict):
                root = str((lib.get("store") or {}).get("graphRoot") or "") or None
        return disk_free_at(root)

    async def pull(
        self,
        image: str,
        *,
        progress: PullCallback | None = None,
        auth: RegistryAuth | None = None,
    ) -> None:
        registry = image.split("/", 1)[0] if "/" in image else ""
        if registry not in self.insecure_registries:
            await super().pull(image, progress=progress, auth=auth)
            return
        # libpod pull streams text lines, not byte counts: report layers as they are copied.
        headers = {"X-Registry-Auth": auth_header(auth)} if auth else {}
        layers = 0
        try:
            async with self._client._query(
                f"{LIBPOD}/images/pull",
                "POST",
                params={"reference": image, "tlsVerify": "false", "quiet": "false"},
                headers=headers,
                versioned_api=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=300, connect=10),
            ) as resp:
                async for msg in json_lines(resp.content):
                    if msg.get("error"):
                        raise PullError(f"pull {image}: {msg['error']}")
                    text = str(msg.get("stream") or "")
                    if text.startswith("Copying blob"):
                        layers += 1
                    if text:
                        snap = PullProgress(image, text.strip(), layers, layers, 0, 0)
                        await report_progress(progress, snap)
        except DockerError as exc:
            raise PullError(f"pull {image}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise PullError(f"pull {image}: {exc}") from exc
        if await self.image(image) is None:
            raise PullError(f"pull {image}: the engine finished but the image is not present")
