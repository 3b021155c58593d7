"""Agent configuration: a TOML file over built-in defaults, validated field by field.

Every problem raises ``ConfigError`` naming the dotted field (``reconcile.interval: must be a
positive duration``), so an operator can fix a file without reading code. Unknown keys are
errors too: a typo that silently falls back to a default is worse than a refusal.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from agent.errors import ConfigError
from protocol.subjects import valid_device_id
from sbutil.duration import parse_duration

EngineKind = Literal["auto", "docker", "podman"]

DEFAULT_DATA_DIR = "/var/lib/signalbeam-agent"
DEFAULT_CONFIG_PATH = "/etc/signalbeam/agent.toml"

_SIZE = re.compile(r"(\d{1,15})\s*(B|kB|KB|K|MB|M|GB|G|TB|T|KiB|Ki|MiB|Mi|GiB|Gi|TiB|Ti)?")
_SIZE_UNIT = {
    None: 1,
    "B": 1,
    "kB": 1000,
    "KB": 1000,
    "K": 1000,
    "MB": 1000**2,
    "M": 1000**2,
    "GB": 1000**3,
    "G": 1000**3,
    "TB": 1000**4,
    "T": 1000**4,
    "KiB": 1024,
    "Ki": 1024,
    "MiB": 1024**2,
    "Mi": 1024**2,
    "GiB": 1024**3,
    "Gi": 1024**3,
    "TiB": 1024**4,
    "Ti": 1024**4,
}


@dataclass(frozen=True)
class RetentionConfig:
    raw: float = 3600.0
    minute: float = 7 * 86400.0
    hour: float = 90 * 86400.0


@dataclass(frozen=True)
class MetricsConfig:
    interval: float = 10.0
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    prune_interval: float = 300.0


@dataclass(frozen=True)
class ReconcileConfig:
    interval: float = 60.0


DEFAULT_LOCK_DIR = "/run/signalbeam/locks"


@dataclass(frozen=True)
class UpdateConfig:
    """Update locks and maintenance windows (docs/agent.md "Update locks and windows")."""

    # Apps hold an update lock by creating ``*.lock`` here (bind-mount it into the app's
    # container); tmpfs by default, so a lock does not outlive a reboot (as balena's).
    lock_dir: Path = Path(DEFAULT_LOCK_DIR)
    # The device's time zone for maintenance windows (IANA name); None: the system's.
    timezone: str | None = None


@dataclass(frozen=True)
class OutboxConfig:
    """Bounds on unsent rows while offline (see ``agent.store`` for what is dropped first)."""

    max_bytes: int = 32 * 1024 * 1024
    max_age: float = 7 * 86400.0


@dataclass(frozen=True)
class RegistryAuth:
    registry: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = 48484


@dataclass(frozen=True)
class HubConfig:
    url: str | None = None
    credentials_file: str | None = None
    # TLS to the hub: the PEM CA (or the hub's self-signed certificate) the hub's certificate
    # must chain to, on the leaf link and at enrollment. Set, the leaf link is always TLS,
    # even for a nats-leaf:// URL. Unset, tls:// is checked against the system's CAs.
    ca_file: str | None = None
    # Overrides the leaf URL from enrollment (e.g. tls://hub.example.com:7422 after the hub
    # moved or turned TLS on); None: the enrolled one.
    leaf_url: str | None = None
    # How often the agent sends its heartbeat, which the hub answers: "online" means an answer
    # came within about one interval (docs/sync.md "What online means").
    heartbeat_interval: float = 30.0


@dataclass(frozen=True)
class SigningConfig:
    """``[signing]``: bundle signatures (docs/security.md). Keys here are trusted whatever the
    hub relays, and no trust set can retire them; ``require`` (unset: what the fleet's trust
    set says) decides whether an unsigned bundle is refused."""

    trusted_keys: tuple[str, ...] = ()
    require: bool | None = None


@dataclass(frozen=True)
class MeteredConfig:
    """``[metered]``: the link's data budget (``budget = "100KB/day"``, protocol.metered), in
    bytes per day; None: not metered. A budget set at the hub for the device or its group
    wins over this one (agent.sync.pacing, docs/agent.md "Metered links")."""

    budget: int | None = None


@dataclass(frozen=True)
class AgentConfig:
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    device_id: str = "device"
    # False when device_id came from the host name: then an id already in the store wins,
    # so renaming the host does not orphan the device.
    device_id_configured: bool = False
    engine: EngineKind = "auto"
    engine_socket: str | None = None
    image_disk_budget: int | None = None  # bytes; None = limited only by free disk
    desired_poll_interval: float = 0.5
    reconcile: ReconcileConfig = field(default_factory=ReconcileConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    registry_auth: tuple[RegistryAuth, ...] = ()
    http: HttpConfig = field(default_factory=HttpConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    metered: MeteredConfig = field(default_factory=MeteredConfig)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "agent.db"


def hostname_slug(hostname: str | None = None) -> str:
    """A valid device id derived from the host name ("Edge_Box.01" -> "edge-box-01")."""
    name = (hostname if hostname is not None else socket.gethostname()).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", name).strip("-")[:63].strip("-")
    return slug if valid_device_id(slug) else "device"


def parse_size(value: Any) -> int:
    """Bytes from an integer or a string such as ``"512MB"`` or ``"2GiB"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value.strip())):
        size = int(m.group(1)) * _SIZE_UNIT[m.group(2)]
    else:
        raise ValueError('must be a size in bytes (an integer, or a string like "512MB", "2GiB")')
    if size <= 0:
        raise ValueError("must be a positive size")
    return size


class _Section:
    """Reads one TOML table, turning every problem into a ConfigError with the full path."""

    def __init__(self, doc: Any, prefix: str) -> None:
        if not isinstance(doc, dict):
            raise ConfigError(prefix.rstrip(".") or "$", "must be a table")
        self.doc = doc
        self.prefix = prefix
        self.seen: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def raw(self, key: str) -> Any:
        self.seen.add(key)
        return self.doc.get(key)

    def convert(self, key: str, default: Any, fn: Any) -> Any:
        value = self.raw(key)
        if value is None:
            return default
        try:
            return fn(value)
        except ValueError as exc:
            raise ConfigError(self.path(key), str(exc)) from None

    def string(self, key: str, default: str | None, *, non_empty: bool = True) -> str | None:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, str) or (non_empty and not value.strip()):
            raise ConfigError(self.path(key), "must be a non-empty string")
        return value

    def table(self, key: str) -> _Section:
        value = self.raw(key)
        return _Section({} if value is None else value, self.path(key) + ".")

    def done(self) -> None:
        unknown = sorted(set(self.doc) - self.seen)
        if unknown:
            raise ConfigError(self.path(unknown[0]), "unknown setting")


def _port(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ValueError("must be an integer port between 0 and 65535")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _ip(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be an IP address string")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"must be an IP address, got {value!r}") from None
    return value


def _timezone(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError('must be an IANA time zone name such as "Europe/Berlin"')
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f'unknown time zone {value!r} (an IANA name such as "Europe/Berlin")'
        ) from None
    return value


def _engine(value: Any) -> EngineKind:
    if value not in ("auto", "docker", "podman"):
        raise ValueError("must be one of 'auto', 'docker', 'podman'")
    return value


def _socket(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty socket path or URL")
    if not (value.startswith(("unix://", "tcp://", "http://", "https://", "/"))):
        raise ValueError("must be an absolute socket path or a unix://, tcp:// or http(s):// URL")
    return value


def check_ca_file(path: Path) -> str:
    """An existing, readable file holding at least one PEM certificate (``[hub] ca_file``,
    ``enroll --ca-file``)."""
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError(f"{path} holds no PEM certificate")
    import ssl  # only when a CA is configured: OpenSSL is megabytes `status` need not map

    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as exc:
        raise ValueError(f"{path} is not a valid PEM CA bundle ({exc.reason or exc})") from None
    return str(path)


def _leaf_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("nats-leaf://", "tls://")):
        raise ValueError("must be a tls:// or nats-leaf:// URL (tls://host:port)")
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or not port or parts.username or parts.path not in ("", "/"):
        raise ValueError("must be scheme://host:port, without credentials or a path")
    return value


def _registry_auth(value: Any) -> tuple[RegistryAuth, ...]:
    if not isinstance(value, list):
        raise ConfigError("registry_auth", "must be a list of tables")
    out = []
    for i, item in enumerate(value):
        sec = _Section(item, f"registry_auth[{i}].")
        registry = sec.string("registry", None)
        username = sec.string("username", None)
        password = sec.string("password", None, non_empty=False)
        for key, val in (("registry", registry), ("username", username), ("password", password)):
            if val is None:
                raise ConfigError(sec.path(key), "is required")
        sec.done()
        out.append(RegistryAuth(str(registry), str(username), str(password)))
    return tuple(out)


def config_from_dict(doc: dict[str, Any], *, base_dir: Path | None = None) -> AgentConfig:
    """Build and validate an ``AgentConfig`` from a parsed TOML document.

    Relative paths are taken relative to ``base_dir`` (the config file's directory) so a
    config file means the same thing whatever the working directory.
    """
    top = _Section(doc, "")
    defaults = AgentConfig()

    def _path(value: Any) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("must be a non-empty path")
        p = Path(value).expanduser()
        return (base_dir / p) if (base_dir is not None and not p.is_absolute()) else p

    data_dir = top.convert("data_dir", defaults.data_dir, _path)
    device_id = top.string("device_id", None)
    configured = device_id is not None
    if device_id is None:
        device_id = hostname_slug()
    elif not valid_device_id(device_id):
        raise ConfigError(
            "device_id",
            "must be 1-63 characters of a-z, 0-9 and '-', starting and ending alphanumeric",
        )
    engine = top.convert("engine", defaults.engine, _engine)
    engine_socket = top.convert("engine_socket", None, _socket)
    budget = top.convert("image_disk_budget", None, parse_size)
    poll = top.convert("desired_poll_interval", defaults.desired_poll_interval, parse_duration)

    rec = top.table("reconcile")
    reconcile = ReconcileConfig(interval=rec.convert("interval", 60.0, parse_duration))
    rec.done()

    up = top.table("update")
    update = UpdateConfig(
        lock_dir=up.convert("lock_dir", UpdateConfig.lock_dir, _path),
        timezone=up.convert("timezone", None, _timezone),
    )
    up.done()

    met = top.table("metrics")
    ret = met.table("retention")
    retention = RetentionConfig(
        raw=ret.convert("raw", RetentionConfig.raw, parse_duration),
        minute=ret.convert("1m", RetentionConfig.minute, parse_duration),
        hour=ret.convert("1h", RetentionConfig.hour, parse_duration),
    )
    ret.done()
    metrics = MetricsConfig(
        interval=met.convert("interval", MetricsConfig.interval, parse_duration),
        retention=retention,
        prune_interval=met.convert("prune_interval", MetricsConfig.prune_interval, parse_duration),
    )
    met.done()

    ob = top.table("outbox")
    outbox = OutboxConfig(
        max_bytes=ob.convert("max_bytes", OutboxConfig.max_bytes, parse_size),
        max_age=ob.convert("max_age", OutboxConfig.max_age, parse_duration),
    )
    ob.done()

    auth_raw = top.raw("registry_auth")
    registry_auth = () if auth_raw is None else _registry_auth(auth_raw)

    ht = top.table("http")
    http = HttpConfig(
        enabled=ht.convert("enabled", HttpConfig.enabled, _bool),
        bind=ht.convert("bind", HttpConfig.bind, _ip),
        port=ht.convert("port", HttpConfig.port, _port),
    )
    ht.done()

    hb = top.table("hub")
    url = hb.string("url", None)
    if url is not None and not url.startswith(("nats://", "tls://", "ws://", "wss://")):
        raise ConfigError("hub.url", "must be a nats://, tls://, ws:// or wss:// URL")
    creds = hb.convert("credentials_file", None, lambda v: str(_path(v)))
    ca_file = hb.convert("ca_file", None, lambda v: check_ca_file(_path(v)))
    leaf_url = hb.convert("leaf_url", None, _leaf_url)
    heartbeat = hb.convert("heartbeat_interval", HubConfig.heartbeat_interval, parse_duration)
    hub = HubConfig(
        url=url,
        credentials_file=creds,
        ca_file=ca_file,
        leaf_url=leaf_url,
        heartbeat_interval=heartbeat,
    )
    hb.done()

    sg = top.table("signing")
    signing = SigningConfig(
        trusted_keys=sg.convert("trusted_keys", (), _public_keys),
        require=sg.convert("require", None, _bool),
    )
    sg.done()

    mt = top.table("metered")
    metered = MeteredConfig(budget=mt.convert("budget", None, _budget))
    mt.done()

    top.done()
    return AgentConfig(
        data_dir=data_dir,
        device_id=device_id,
        device_id_configured=configured,
        engine=engine,
        engine_socket=engine_socket,
        image_disk_budget=budget,
        desired_poll_interval=poll,
        reconcile=reconcile,
        update=update,
        metrics=metrics,
        outbox=outbox,
        registry_auth=registry_auth,
        http=http,
        hub=hub,
        signing=signing,
        metered=metered,
    )


def _budget(value: Any) -> int:
    from protocol.metered import BudgetError, parse_budget

    try:
        return parse_budget(value)
    except BudgetError as exc:
        raise ValueError(exc.message) from None


def _public_keys(value: Any) -> tuple[str, ...]:
    from bundles.signing import SigningError, parse_public_key

    if not isinstance(value, list):
        raise ValueError("must be a list of public keys (ed25519:...)")
    for key in value:
        try:
            parse_public_key(key)
        except SigningError as exc:
            raise ValueError(str(exc)) from None
    return tuple(value)


def load_config(path: str | Path | None) -> AgentConfig:
    """Read a TOML config file; ``None`` means defaults only (and the host name as device id)."""
    if path is None:
        return config_from_dict({})
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError("$", f"cannot read config file {p}: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("$", f"config file {p} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("$", f"config file {p} is not valid TOML: {exc}") from None
    return config_from_dict(doc, base_dir=p.resolve().parent)
