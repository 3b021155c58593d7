"""Hub configuration: a data directory holding ``hub.toml``, ``secrets.json``, the DB, the
generated nats-server and litestream configs, JetStream storage and the default replica.

``hub.toml`` is written by ``signalbeam-hub init`` and may be edited; every value can also be
overridden by a ``run`` flag. Secrets (NATS passwords) live apart in a 0600 file.
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from hub.errors import ConfigError
from sbutil.duration import parse_duration as _parse_duration
from sbutil.private import private_dir

CONFIG_FILE = "hub.toml"
SECRETS_FILE = "secrets.json"


@dataclass(frozen=True)
class HubConfig:
    client_port: int = 4222
    leafnode_port: int = 7422
    monitor_port: int = 8222
    http_port: int = 8080
    # Devices and operators reach the client and leafnode listeners; the nats monitor stays
    # local. Tests set everything to 127.0.0.1.
    host: str = "0.0.0.0"
    monitor_host: str = "127.0.0.1"
    http_host: str = "0.0.0.0"
    # The address printed for operators and devices (init output); defaults to 127.0.0.1.
    public_host: str = "127.0.0.1"
    litestream: bool = True
    # Seconds without a heartbeat (devices send one every 30 s) before a device is offline.
    offline_grace: int = 90
    replica_url: str = ""  # empty: file:// directory "replica" under the data dir
    nats_server: str = ""  # empty: found next to the Python interpreter, then on PATH
    litestream_bin: str = ""
    # TLS on the leafnode listener (the device leaf link). Both empty: a plain link. Relative
    # paths are under the data dir. Set, every device must reach the hub over TLS.
    leaf_tls_cert: str = ""
    leaf_tls_key: str = ""
    # TLS on the client listener (operators, enrollment, the hub's own connection). Both
    # empty: plain. Set, every client must use TLS; may name the same files as the leaf pair.
    client_tls_cert: str = ""
    client_tls_key: str = ""
    # Retention (hub/retention.py, docs/hub.md "Retention"): durations like "48h", "90d";
    # "0" or "forever" keeps that category for ever.
    retention_metrics_1m: str = "48h"
    retention_metrics_1h: str = "90d"
    retention_events: str = "30d"
    # The newest N events of every device (not decommissioned) and of the hub itself survive
    # any age: a quiet device's Events tab still tells its last story.
    retention_events_keep: int = 100
    retention_interval: str = "10m"
    # Signed bundles (docs/security.md): what a device enrolling before the operator pushed
    # any trust set is told. True: it refuses unsigned bundles; `init` writes true (the
    # default for new hubs) unless --allow-unsigned-bundles. A hub.toml without the key (a
    # hub made before signed bundles) reads false, so an upgrade does not split its fleet
    # into devices that run unsigned bundles and newly enrolled ones that refuse them.
    # Once a signed trust set exists, that set decides, and only a key it trusts can change it.
    require_signed_bundles: bool = False
    # How NATS logins are checked (docs/security.md): "jwt", nats-server in operator mode,
    # devices log in with their own nkey and a JWT the hub signs (no config change per
    # device); "password", one bcrypt-hashed password user per device in the generated
    # config, reloaded at every enrollment (hubs made before issue 16). `init` writes "jwt".
    nats_auth: str = "password"
    # JWT mode: how long a device's JWT is good for (seconds); the agent renews it at two
    # thirds of that. Short in tests.
    device_jwt_ttl: int = 86400
    # Hub workers (docs/architecture.md "Scale path"): 1, the default, is the one embedded
    # hub (`run` starts nats-server itself). M > 1 splits report ingest and heartbeats over M processes,
    # `run --worker I` (I = 0..M-1) each, beside one `signalbeam-hub nats`; one of them at a
    # time holds the control-plane lease.
    workers: int = 1
    # A hub NATS cluster (docs/hub.md "NATS cluster"): the nodes' hosts, one per node (empty:
    # one nats-server, the default). Nodes sharing a host (a cluster on one machine's loopback)
    # take the configured ports plus their index; nodes on their own hosts use the ports as
    # configured. JetStream streams and KV buckets are replicated on every node (up to 3).
    cluster_hosts: tuple[str, ...] = ()
    cluster_port: int = 6222  # the route listener
    cluster_name: str = "signalbeam"
    # Which nodes this hub process runs as its children (indexes into cluster_hosts): every
    # node on one machine; the deploy runs the others from their own rendered configs.
    cluster_local: tuple[int, ...] = ()
    # TLS on the routes between cluster nodes, both ways verified (`verify: true`): each node
    # presents its own certificate (DataDir.route_cert) signed by the route CA
    # (DataDir.route_ca), and accepts only peers with one. `init` turns it on for every new
    # cluster; a cluster made before it keeps plain routes until `route-certs` and this.
    route_tls: bool = False

    @property
    def clustered(self) -> bool:
        return len(self.cluster_hosts) > 1

    @property
    def js_replicas(self) -> int:
        """JetStream replicas for the hub's streams and KV buckets: R3 on a cluster of three
        or more (a quorum survives one node), R1 on one server."""
        return min(3, len(self.cluster_hosts)) if self.clustered else 1

    @property
    def jwt_auth(self) -> bool:
        return self.nats_auth == "jwt"

    @property
    def leaf_tls(self) -> bool:
        return bool(self.leaf_tls_cert or self.leaf_tls_key)

    @property
    def client_tls(self) -> bool:
        return bool(self.client_tls_cert or self.client_tls_key)

    def with_overrides(self, **overrides: Any) -> HubConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class Secrets:
    hub_password: str
    operator_password: str
    enroll_password: str
    # The cluster's route login (nodes authenticate each other); "" on hubs made before it,
    # filled in when the hub first runs clustered.
    route_password: str = ""

    @classmethod
    def generate(cls) -> Secrets:
        return cls(*(secrets.token_urlsafe(24) for _ in range(4)))


class DataDir:
    """Every path under a hub data directory, in one place."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def secrets(self) -> Path:
        return self.root / SECRETS_FILE

    @property
    def db(self) -> Path:
        return self.root / "hub.db"

    @property
    def vault_key(self) -> Path:
        """The key that encrypts the fleet's secrets in the DB (hub.vault): not replicated
        with the DB (Litestream), so a copy of the DB alone reveals no secret."""
        return self.root / "vault.key"

    @property
    def nats_dir(self) -> Path:
        return self.root / "nats"

    @property
    def nats_conf(self) -> Path:
        return self.nats_dir / "nats-server.conf"

    @property
    def nats_pid_file(self) -> Path:
        """``signalbeam-hub nats``'s nats-server pid (hub workers reload it by signal)."""
        return self.nats_dir / "nats-server.pid"

    @property
    def jetstream(self) -> Path:
        return self.nats_dir / "jetstream"

    def node_dir(self, index: int) -> Path:
        """A cluster node's own state (JetStream store, resolver directory)."""
        return self.nats_dir / f"node{index}"

    def node_conf(self, index: int) -> Path:
        return self.nats_dir / f"node{index}.conf"

    @property
    def litestream_conf(self) -> Path:
        return self.root / "litestream.yml"

    @property
    def replica(self) -> Path:
        return self.root / "replica"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pid_file(self) -> Path:
        return self.root / "hub.pid"

    def replica_url(self, cfg: HubConfig) -> str:
        return cfg.replica_url or self.replica.as_uri()

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def route_tls_dir(self) -> Path:
        return self.tls_dir / "route"

    @property
    def route_ca(self) -> Path:
        """The CA (bundle) every node checks its peers' route certificates against."""
        return self.route_tls_dir / "ca.pem"

    @property
    def route_ca_key(self) -> Path:
        """The route CA's key (only where `init` made the CA; `route-certs` signs with it)."""
        return self.route_tls_dir / "ca-key.pem"

    def route_cert(self, index: int) -> Path:
        return self.route_tls_dir / f"node{index}-cert.pem"

    def route_key(self, index: int) -> Path:
        return self.route_tls_dir / f"node{index}-key.pem"

    def path(self, value: str) -> Path:
        """A path from the config: relative ones are under the data dir."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p


def check_tls(cfg: HubConfig, data: DataDir, source: str = CONFIG_FILE) -> None:
    """Leaf and client TLS settings: each pair both or neither, files readable, the key
    matching the cert."""
    from hub.tls import CertProblem, check_pair

    for listener in ("leaf", "client"):
        cert_key, key_key = f"{listener}_tls_cert", f"{listener}_tls_key"
        cert, key = getattr(cfg, cert_key), getattr(cfg, key_key)
        if not cert and not key:
            continue
        for name, other in ((cert_key, key_key), (key_key, cert_key)):
            if not getattr(cfg, name):
                raise ConfigError(f"{source}: {name}: required when {other} is set", field=name)
        try:
            check_pair(data.path(cert), data.path(key))
        except CertProblem as exc:
            name = f"{listener}_tls_{exc.field}"
            raise ConfigError(f"{source}: {name}: {exc}", field=name) from None
    if cfg.route_tls and cfg.clustered:
        from hub.tls import check_ca

        # The nodes this process runs: the others' files live on their own machines.
        try:
            check_ca(data.route_ca)
            for i in cfg.cluster_local:
                check_pair(data.route_cert(i), data.route_key(i))
        except CertProblem as exc:
            raise ConfigError(f"{source}: route_tls: {exc}", field="route_tls") from None


FOREVER = ("0", "forever")
# Shorter windows are refused: the hourly rollup is folded from each new minute, but an hour
# one of whose minutes is rewritten is recomputed from its minute rows (hub.store.telemetry),
# which must all still be there; and "48m" typed for "48h" would quietly drop two days of data.
MIN_RETENTION = 3600
RETENTION_KEYS = ("retention_metrics_1m", "retention_metrics_1h", "retention_events")


def parse_duration(value: str, field: str, source: str = CONFIG_FILE) -> int:
    """Whole seconds (at least one) in the grammar of ``sbutil.duration`` ("90s", "1h30m")."""
    try:
        seconds = _parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{source}: {field}: {exc}", field=field) from None
    if seconds < 1:
        raise ConfigError(f"{source}: {field}: {value!r} is under one second", field=field)
    return int(seconds)


def parse_retention(value: str, field: str, source: str = CONFIG_FILE) -> int | None:
    """A retention window in seconds; None keeps for ever ("0" or "forever")."""
    if value.strip().lower() in FOREVER:
        return None
    seconds = parse_duration(value, field, source)
    if seconds < MIN_RETENTION:
        raise ConfigError(
            f"{source}: {field}: {value!r} is under 1h; use at least '1h', or '0'/'forever'"
            " to keep everything",
            field=field,
        )
    return seconds


def check_retention(cfg: HubConfig, source: str = CONFIG_FILE) -> None:
    """Every retention setting parses; errors name the key."""
    for key in RETENTION_KEYS:
        parse_retention(getattr(cfg, key), key, source)
    parse_duration(cfg.retention_interval, "retention_interval", source)
    if cfg.retention_events_keep < 0:
        raise ConfigError(
            f"{source}: retention_events_keep must be 0 or more", field="retention_events_keep"
        )


NATS_AUTH_MODES = ("jwt", "password")
_TOML_KEYS = {f.name: f.type for f in fields(HubConfig)}


def render_toml(cfg: HubConfig) -> str:
    lines = ["# SignalBeam hub configuration (see docs/hub.md). Flags of `run` override these."]
    for key, value in asdict(cfg).items():
        if isinstance(value, tuple):
            lines.append(f"{key} = {json.dumps(list(value))}")  # a JSON array is a TOML array
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")  # a JSON string is a TOML basic string
    return "\n".join(lines) + "\n"


def parse_toml(text: str, source: str = CONFIG_FILE) -> HubConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    defaults = HubConfig()
    values: dict[str, Any] = {}
    for key, value in doc.items():
        if key not in _TOML_KEYS:
            raise ConfigError(f"{source}: unknown setting {key!r}", field=key)
        expected = type(getattr(defaults, key))
        if expected is tuple:
            value = _tuple(key, value, source)
        if type(value) is not expected:
            raise ConfigError(
                f"{source}: {key} must be {expected.__name__}, got {type(value).__name__}",
                field=key,
            )
        if key == "device_jwt_ttl" and value < 10:
            raise ConfigError(f"{source}: device_jwt_ttl must be at least 10 seconds", field=key)
        if key == "workers" and not 1 <= value <= 64:
            raise ConfigError(f"{source}: workers must be 1-64", field=key)
        if key == "offline_grace" and value < 1:
            raise ConfigError(f"{source}: offline_grace must be at least 1 second", field=key)
        if key == "nats_auth" and value not in NATS_AUTH_MODES:
            raise ConfigError(f"{source}: nats_auth must be 'jwt' or 'password'", field=key)
        if key.endswith("_port") and not 1 <= value <= 65535:
            raise ConfigError(f"{source}: {key} must be 1-65535", field=key)
        values[key] = value
    cfg = replace(defaults, **values)
    check_retention(cfg, source)
    check_cluster(cfg, source)
    return cfg


_TUPLE_ITEMS = {"cluster_hosts": str, "cluster_local": int}


def _tuple(key: str, value: Any, source: str) -> tuple[Any, ...]:
    item = _TUPLE_ITEMS[key]
    if not isinstance(value, list) or any(type(v) is not item for v in value):
        raise ConfigError(f"{source}: {key} must be a list of {item.__name__}", field=key)
    return tuple(value)


def check_cluster(cfg: HubConfig, source: str = CONFIG_FILE) -> None:
    """A cluster of 3 or more nodes, each named once in cluster_local; password mode only
    with every node local (its per-device users reach only the configs it rewrites and
    reloads itself; JWT mode's resolver spreads to every node through the cluster)."""
    n = len(cfg.cluster_hosts)
    if n == 0:
        if cfg.cluster_local:
            raise ConfigError(f"{source}: cluster_local needs cluster_hosts", field="cluster_local")
        if cfg.route_tls:
            raise ConfigError(f"{source}: route_tls needs cluster_hosts", field="route_tls")
        return
    if n < 3:
        raise ConfigError(
            f"{source}: cluster_hosts: a cluster needs at least 3 nodes (a JetStream quorum"
            " that survives one), got {n}",
            field="cluster_hosts",
        )
    if not cfg.cluster_local or any(not 0 <= i < n for i in cfg.cluster_local):
        raise ConfigError(
            f"{source}: cluster_local must name this hub's nodes, indexes 0-{n - 1}",
            field="cluster_local",
        )
    if len(set(cfg.cluster_local)) != len(cfg.cluster_local):
        raise ConfigError(f"{source}: cluster_local names a node twice", field="cluster_local")
    if not cfg.jwt_auth and len(cfg.cluster_local) != n:
        raise ConfigError(
            f"{source}: nats_auth 'password' needs every cluster node run by this hub"
            " (cluster_local); use nats_auth 'jwt' for nodes on other machines",
            field="cluster_local",
        )


def load(data: DataDir) -> tuple[HubConfig, Secrets]:
    if not data.config.exists():
        raise ConfigError(
            f"{data.config} not found; run `signalbeam-hub init --data {data.root}` first"
        )
    cfg = parse_toml(data.config.read_text(encoding="utf-8"), str(data.config))
    check_tls(cfg, data, str(data.config))
    try:
        raw = json.loads(data.secrets.read_text(encoding="utf-8"))
        sec = Secrets(**raw)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{data.secrets}: unreadable or malformed ({exc})") from exc
    return cfg, sec


def write_private(path: Path, text: str) -> None:
    """Write a file only the owner can read, atomically (temp file + rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def save(data: DataDir, cfg: HubConfig, sec: Secrets) -> None:
    private_dir(data.root)
    write_private(data.config, render_toml(cfg))
    save_secrets(data, sec)


def save_secrets(data: DataDir, sec: Secrets) -> None:
    write_private(data.secrets, json.dumps(asdict(sec), indent=2) + "\n")
