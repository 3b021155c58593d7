"""The one container-engine interface the reconciler talks to, and the values it returns.

Everything here is engine-neutral: Docker and Podman differ only in the adapters
(``docker_api.py``, ``podman.py``). Only containers carrying this device's label are ever
listed or acted on; the label keys live here so planner, executor and adapters agree.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

LABEL_PREFIX = "io.signalbeam."
LABEL_DEVICE = "io.signalbeam.device"
LABEL_BUNDLE = "io.signalbeam.bundle"
LABEL_VERSION = "io.signalbeam.version"
LABEL_SERVICE = "io.signalbeam.service"
LABEL_SPEC_HASH = "io.signalbeam.spec-hash"

EngineKind = Literal["docker", "podman"]
ContainerState = Literal[
    "created", "running", "paused", "restarting", "removing", "exited", "dead", "unknown"
]
Health = Literal["none", "starting", "healthy", "unhealthy"]


@dataclass(frozen=True)
class PortBinding:
    container: int
    protocol: str
    host_ip: str | None
    host: int | None


@dataclass(frozen=True)
class ObservedContainer:
    """One of this device's containers as the engine reports it."""

    id: str
    name: str
    service: str
    bundle: str
    version: str
    spec_hash: str
    device: str
    state: ContainerState
    health: Health = "none"
    exit_code: int | None = None
    restart_count: int = 0
    image: str = ""
    started_at: float | None = None  # wall clock seconds; None if never started
    created_at: float | None = None
    ports: tuple[PortBinding, ...] = ()
    network_mode: str = ""
    # The memory cap the container was created with (HostConfig.Memory); None: uncapped.
    # Engines' stats can report the host's RAM as the limit even under a cap.
    memory_limit: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "service": self.service,
            "bundle": self.bundle,
            "version": self.version,
            "spec_hash": self.spec_hash,
            "state": self.state,
            "health": self.health,
            "exit_code": self.exit_code,
            "restart_count": self.restart_count,
            "image": self.image,
            "started_at": self.started_at,
            "ports": [
                {"container": p.container, "protocol": p.protocol, "host": p.host}
                for p in self.ports
            ],
        }


@dataclass(frozen=True)
class EngineInfo:
    kind: EngineKind
    version: str
    api_version: str
    url: str
    data_root: str | None  # where the engine keeps images; used for the disk check


@dataclass(frozen=True)
class PullProgress:
    """A running tally of one pull; ``total_bytes`` grows as layer sizes become known."""

    image: str
    status: str
    layers_total: int
    layers_done: int
    current_bytes: int
    total_bytes: int


PullCallback = Callable[[PullProgress], Awaitable[None] | None]


@dataclass(frozen=True)
class RegistryAuth:
    username: str
    password: str
    server: str  # host[:port] this credential is for


@dataclass(frozen=True)
class PortSpec:
    container: int
    host: int | None = None
    protocol: str = "tcp"
    host_ip: str = "0.0.0.0"


@dataclass(frozen=True)
class MountSpec:
    source: str
    target: str
    type: Literal["volume", "bind"] = "volume"
    read_only: bool = False


@dataclass(frozen=True)
class ImageHealthcheck:
    """A health-check command as a container carries it (Docker semantics): the image's own
    HEALTHCHECK, or a bundle's exec probe stored with the container (``exec_probe``)."""

    command: tuple[str, ...]  # argv to exec
    interval: float
    timeout: float
    retries: int
    start_period: float


@dataclass(frozen=True)
class CreateRequest:
    """Everything needed to create one container; built from a ContainerSpec by the executor."""

    name: str
    image: str
    labels: dict[str, str]
    command: tuple[str, ...] | None = None  # entrypoint override
    args: tuple[str, ...] | None = None  # cmd override
    env: dict[str, str] = field(default_factory=dict)
    ports: tuple[PortSpec, ...] = ()
    mounts: tuple[MountSpec, ...] = ()
    restart: str = "unless-stopped"
    network_mode: str = "bridge"
    memory: int | None = None
    cpus: float | None = None
    # The bundle's exec probe. An engine whose API exec sessions outlive their result (Podman
    # keeps a conmon pair per exec for 300 s) stores it as the container's own health check
    # and runs it on request instead; the agent still decides when it runs and what it means.
    exec_probe: ImageHealthcheck | None = None


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str  # combined stdout/stderr, truncated


@dataclass(frozen=True)
class ContainerStats:
    id: str
    cpu_percent: float  # of one core x number of cores, like `docker stats`
    memory_bytes: int
    memory_limit: int | None


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    size: int  # bytes


@dataclass(frozen=True)
class EngineEvent:
    """A container lifecycle event about one of this device's containers."""

    action: str  # start, die, stop, destroy, create, health_status, ...
    container_id: str
    service: str | None
    time: float
    attributes: dict[str, str]


class Engine(abc.ABC):
    """Async container engine scoped to one device: every call sees only its containers."""

    kind: EngineKind
    url: str
    device_id: str

    @abc.abstractmethod
    async def info(self) -> EngineInfo: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    # -- containers --------------------------------------------------------------------
    @abc.abstractmethod
    async def list_containers(self) -> list[ObservedContainer]:
        """Every container (any state) carrying this device's label; nothing else."""

    @abc.abstractmethod
    async def inspect(self, ref: str) -> ObservedContainer | None:
        """One of this device's containers by id or name; None if absent or not ours."""

    @abc.abstractmethod
    async def create(self, req: CreateRequest) -> str:
        """Create (not start) a container; returns its id. Refuses labels of another device."""

    @abc.abstractmethod
    async def start(self, ref: str) -> None: ...

    @abc.abstractmethod
    async def stop(self, ref: str, timeout: float = 10.0) -> None: ...

    @abc.abstractmethod
    async def remove(self, ref: str) -> None:
        """Force-remove; a container already gone is not an error."""

    @abc.abstractmethod
    async def exec(self, ref: str, argv: Sequence[str], timeout: float) -> ExecResult: ...

    @abc.abstractmethod
    async def image_healthcheck(self, ref: str) -> ImageHealthcheck | None:
        """The HEALTHCHECK the container inherited from its image (None if it has none)."""

    @abc.abstractmethod
    def logs(
        self,
        ref: str,
        *,
        tail: int | None = None,
        since: float | None = None,
        follow: bool = False,
    ) -> AsyncIterator[str]: ...

    @abc.abstractmethod
    async def stats(self, ref: str) -> ContainerStats: ...

    @abc.abstractmethod
    def events(self) -> AsyncIterator[EngineEvent]:
        """Lifecycle events of this device's containers, until cancelled."""

    # -- images ------------------------------------------------------------------------
    @abc.abstractmethod
    async def pull(
        self,
        image: str,
        *,
        progress: PullCallback | None = None,
        auth: RegistryAuth | None = None,
    ) -> None:
        """Pull ``image``; raises ``PullError`` with the engine's message on failure."""

    @abc.abstractmethod
    async def list_images(self) -> list[ImageInfo]: ...

    @abc.abstractmethod
    async def image(self, ref: str) -> ImageInfo | None: ...

    @abc.abstractmethod
    async def remove_image(self, ref: str) -> bool:
        """Remove a tag/image; False if it is in use or absent (never forced)."""

    @abc.abstractmethod
    async def disk_free(self) -> int | None:
        """Free bytes on the filesystem holding the engine's data root (None if unknown)."""
