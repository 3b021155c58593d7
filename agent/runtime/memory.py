"""An in-memory Engine: the simulated engine for planner/executor tests and dry runs.

It keeps the same device scoping as the real adapters (foreign containers exist but are
never listed or touched), so tests of "never touches a foreign container" mean something.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from agent.errors import EngineError, PullError
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
    PullCallback,
    PullProgress,
    RegistryAuth,
)

# Called before each operation as fault(op, ref); raising from it simulates a failure there.
Fault = Callable[[str, str], None]


@dataclass
class MemContainer:
    id: str
    name: str
    image: str
    labels: dict[str, str]
    restart: str = "unless-stopped"
    state: str = "created"
    exit_code: int | None = None
    restart_count: int = 0
    created_at: float = 0.0
    started_at: float | None = None
    healthcheck: ImageHealthcheck | None = None


@dataclass
class MemoryEngine(Engine):
    device_id: str
    images: dict[str, int] = field(default_factory=dict)  # ref -> size in bytes
    registry: dict[str, int] = field(default_factory=dict)  # what a pull can fetch
    containers: dict[str, MemContainer] = field(default_factory=dict)
    free_bytes: int | None = 10**12
    fault: Fault | None = None
    exec_results: dict[str, ExecResult] = field(default_factory=dict)  # by container name
    kind: EngineKind = "docker"
    url: str = "memory://"
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _clock: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _events: asyncio.Queue[EngineEvent] | None = None

    def _check(self, op: str, ref: str) -> None:
        if self.fault is not None:
            self.fault(op, ref)

    def _find(self, ref: str) -> MemContainer | None:
        for c in self.containers.values():
            if c.id == ref or c.name == ref:
                return c
        return None

    def _mine(self, ref: str) -> MemContainer:
        c = self._find(ref)
        if c is None or c.labels.get(LABEL_DEVICE) != self.device_id:
            raise EngineError(f"container {ref} is not one of device {self.device_id}'s")
        return c

    def _emit(self, action: str, c: MemContainer) -> None:
        if self._events is not None:
            self._events.put_nowait(
                EngineEvent(action, c.id, c.labels.get(LABEL_SERVICE), time.time(), dict(c.labels))
            )

    def add_foreign(self, name: str, image: str = "foreign:1", state: str = "running") -> str:
        cid = f"f{next(self._ids):06d}"
        self.containers[cid] = MemContainer(cid, name, image, {}, state=state)
        return cid

    @staticmethod
    def observe(c: MemContainer) -> ObservedContainer:
        return ObservedContainer(
            id=c.id,
            name=c.name,
            service=c.labels.get(LABEL_SERVICE, ""),
            bundle=c.labels.get(LABEL_BUNDLE, ""),
            version=c.labels.get(LABEL_VERSION, ""),
            spec_hash=c.labels.get(LABEL_SPEC_HASH, ""),
            device=c.labels.get(LABEL_DEVICE, ""),
            state=c.state,  # type: ignore[arg-type]
            exit_code=c.exit_code,
            restart_count=c.restart_count,
            image=c.image,
            started_at=c.started_at,
            created_at=c.created_at,
        )

    async def info(self) -> EngineInfo:
        return EngineInfo(self.kind, "memory", "1.41", self.url, None)

    async def close(self) -> None:
        return None

    async def list_containers(self) -> list[ObservedContainer]:
        self._check("list", "")
        return [
            self.observe(c)
            for c in self.containers.values()
            if c.labels.get(LABEL_DEVICE) == self.device_id
        ]

    async def inspect(self, ref: str) -> ObservedContainer | None:
        c = self._find(ref)
        if c is None or c.labels.get(LABEL_DEVICE) != self.device_id:
            return None
        return self.observe(c)

    async def create(self, req: CreateRequest) -> str:
        self._check("create", req.name)
        if req.labels.get(LABEL_DEVICE) != self.device_id:
            raise EngineError(f"refusing to create {req.name}: wrong device label")
        if self._find(req.name) is not None:
            raise EngineError(f"the container name {req.name!r} is already in use")
        if req.image not in self.images:
            raise EngineError(f"no such image: {req.image}")
        cid = f"c{next(self._ids):06d}"
        self.containers[cid] = MemContainer(
            cid, req.name, req.image, dict(req.labels), req.restart, created_at=next(self._clock)
        )
        self._emit("create", self.containers[cid])
        return cid

    async def start(self, ref: str) -> None:
        self._check("start", ref)
        c = self._mine(ref)
        if c.state != "running":
            c.state, c.exit_code, c.started_at = "running", None, float(next(self._clock))
            self._emit("start", c)

    async def stop(self, ref: str, timeout: float = 10.0) -> None:
        self._check("stop", ref)
        c = self._find(ref)
        if c is None or c.labels.get(LABEL_DEVICE) != self.device_id:
            return
        if c.state in ("running", "restarting", "paused"):
            c.state, c.exit_code = "exited", 0
            self._emit("die", c)

    async def remove(self, ref: str) -> None:
        self._check("remove", ref)
        c = self._find(ref)
        if c is None:
            return
        if c.labels.get(LABEL_DEVICE) != self.device_id:
            raise EngineError(f"refusing to remove {ref}: not this device's")
        del self.containers[c.id]
        self._emit("destroy", c)

    def crash(self, ref: str, code: int = 1) -> None:
        """Test helper: the container's process dies."""
        c = self._mine(ref)
        c.state, c.exit_code = "exited", code
        c.restart_count += 1
        self._emit("die", c)

    async def exec(self, ref: str, argv: Sequence[str], timeout: float) -> ExecResult:
        self._check("exec", ref)
        c = self._mine(ref)
        if c.state != "running":
            raise EngineError(f"container {c.name} is not running")
        return self.exec_results.get(c.name, ExecResult(0, ""))

    async def image_healthcheck(self, ref: str) -> ImageHealthcheck | None:
        c = self._find(ref)
        return c.healthcheck if c is not None else None

    async def logs(
        self,
        ref: str,
        *,
        tail: int | None = None,
        since: float | None = None,
        follow: bool = False,
    ) -> AsyncIterator[str]:
        self._mine(ref)
        lines: list[str] = []
        for line in lines:
            yield line

    async def stats(self, ref: str) -> ContainerStats:
        c = self._mine(ref)
        return ContainerStats(c.id, 0.0, 0, None)

    async def events(self) -> AsyncIterator[EngineEvent]:
        self._events = asyncio.Queue()
        while True:
            yield await self._events.get()

    async def pull(
        self,
        image: str,
        *,
        progress: PullCallback | None = None,
        auth: RegistryAuth | None = None,
    ) -> None:
        self._check("pull", image)
        if image not in self.registry:
            raise PullError(f"pull {image}: manifest unknown")
        size = self.registry[image]
        if progress is not None:
            for done in (0, size):
                res = progress(PullProgress(image, "Downloading", 1, int(done == size), done, size))
                if asyncio.iscoroutine(res):
                    await res
        self.images[image] = size

    async def list_images(self) -> list[ImageInfo]:
        return [ImageInfo(ref, (ref,), size) for ref, size in self.images.items()]

    async def image(self, ref: str) -> ImageInfo | None:
        size = self.images.get(ref)
        return None if size is None else ImageInfo(ref, (ref,), size)

    async def remove_image(self, ref: str) -> bool:
        if ref not in self.images or any(c.image == ref for c in self.containers.values()):
            return False
        del self.images[ref]
        return True

    async def disk_free(self) -> int | None:
        return self.free_bytes
