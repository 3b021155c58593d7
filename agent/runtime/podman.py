"""Podman through its Docker-compatible socket, with the few places it differs from Docker.

Podman serves the Docker API on its socket and its own libpod API beside it; we use libpod only
where it adds something: the engine's data root (graphRoot) and pulls from registries the
config marks insecure (``tlsVerify=false``, which the compat endpoint cannot express).
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp
from aiodocker.exceptions import DockerError

from agent.errors import EngineError, EngineUnavailable, PullError
from agent.runtime.base import EngineKind, PullCallback, PullProgress, RegistryAuth
from agent.runtime.docker_api import (
    DockerApiEngine,
    _auth_header,
    json_lines,
    report_progress,
)

LIBPOD = "v4.0.0/libpod"


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
        headers = {"X-Registry-Auth": _auth_header(auth)} if auth else {}
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
