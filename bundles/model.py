"""The app bundle data model: immutable dataclasses built only by ``bundles.validate``.

A bundle is a named, versioned set of containers. Agent, hub and TUI all use these types;
``to_dict`` gives the canonical plain-JSON form that hashing, storage and the wire use.
Durations are seconds (float); memory is bytes (int).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Protocol = Literal["tcp", "udp"]
VolumeType = Literal["volume", "bind"]
RestartPolicy = Literal["no", "always", "on-failure", "unless-stopped"]
ProbeType = Literal["http", "tcp", "exec"]
UpdateStrategy = Literal["download-then-kill", "kill-then-download"]
DependencyCondition = Literal["service_started", "service_healthy"]


@dataclass(frozen=True)
class PortMapping:
    container: int
    host: int | None = None
    protocol: Protocol = "tcp"
    host_ip: str = "0.0.0.0"


@dataclass(frozen=True)
class VolumeMount:
    source: str  # volume name, or absolute host path for a bind mount
    target: str  # absolute path in the container
    type: VolumeType = "volume"
    read_only: bool = False


@dataclass(frozen=True)
class HealthCheck:
    type: ProbeType
    port: int | None = None  # http, tcp
    path: str = "/"  # http
    command: tuple[str, ...] = ()  # exec
    interval: float = 10.0
    timeout: float = 3.0
    retries: int = 3
    start_period: float = 0.0


@dataclass(frozen=True)
class Dependency:
    """One ``depends_on`` entry: start this container only once ``service`` meets ``condition``."""

    service: str
    condition: DependencyCondition = "service_started"


@dataclass(frozen=True)
class Resources:
    memory: int | None = None  # bytes
    cpus: float | None = None


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: tuple[str, ...] | None = None  # overrides the image ENTRYPOINT when set
    args: tuple[str, ...] | None = None  # overrides the image CMD when set
    env: tuple[tuple[str, str], ...] = ()  # sorted by key
    ports: tuple[PortMapping, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    restart: RestartPolicy = "unless-stopped"
    network_mode: str = "bridge"  # bridge | host | none
    healthcheck: HealthCheck | None = None  # None: the image's own HEALTHCHECK, if any
    resources: Resources = field(default_factory=Resources)
    labels: tuple[tuple[str, str], ...] = ()  # sorted by key
    depends_on: tuple[Dependency, ...] = ()  # sorted by service

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def to_dict(self) -> dict[str, Any]:
        """Canonical plain-JSON form of this one container (what ``container_hash`` covers)."""
        return _plain(asdict(self))


@dataclass(frozen=True)
class UpdatePolicy:
    strategy: UpdateStrategy = "download-then-kill"
    health_window: float = 60.0  # seconds a new version has to become healthy
    # When an update may start, in the device's local time (bundles.windows grammar);
    # empty: any time. A device's or group's windows set at the hub take precedence.
    maintenance_windows: tuple[str, ...] = ()


@dataclass(frozen=True)
class BundleSpec:
    bundle: str
    version: str
    containers: tuple[ContainerSpec, ...]
    description: str = ""
    update: UpdatePolicy = field(default_factory=UpdatePolicy)

    @property
    def ref(self) -> str:
        return f"{self.bundle}@{self.version}"

    def container(self, name: str) -> ContainerSpec | None:
        return next((c for c in self.containers if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """Canonical plain-JSON form (the input ``bundles.validate.from_dict`` accepts)."""
        return _plain(asdict(self))


def _plain(value: Any) -> Any:
    # asdict leaves tuples of pairs for env/labels; JSON wants objects and lists.
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in ("depends_on", "maintenance_windows"):
                # Written only when present, so every bundle (and container) without it keeps
                # the canonical form, and therefore the content hash, it had before the field.
                if v and k == "depends_on":
                    out[k] = {d["service"]: {"condition": d["condition"]} for d in v}
                elif v:
                    out[k] = list(v)
            elif k in ("env", "labels") and isinstance(v, tuple | list):
                out[k] = {kk: vv for kk, vv in v}
            else:
                out[k] = _plain(v)
        return out
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
