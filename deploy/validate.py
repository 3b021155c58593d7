"""Validation of the pyinfra data variables the SignalBeam deploys read.

Pure: no pyinfra import and no remote I/O (the only look at the disk is whether a local wheel
file exists), so the unit tests cover every rule. Each problem raises ``DeployDataError``
naming the variable, before any operation is planned: a typo in the inventory must stop the
deploy on the operator's machine, not half-way through a fleet.

Every variable starts with ``signalbeam_``. Unknown ``signalbeam_*`` variables are refused
(a misspelt one would otherwise silently fall back to its default); the hub's variables are
accepted, and ignored, by the agent deploy and the other way round, so one ``all`` group may
hold both.

The device id and tag rules repeat ``protocol.subjects`` / ``protocol.enroll`` on purpose:
the deploy runs on the operator's machine, which need not have the package installed. A unit
test checks that both agree.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

PREFIX = "signalbeam_"

DEVICE_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")  # the hub's tag rule
MAX_TAGS = 32
# A name, optional extras, optional version clauses: what `pip install` takes as one
# requirement. Anything with spaces or shell syntax is refused outright.
PIP_SPEC_RE = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?"
    r"(\[[A-Za-z0-9._,-]+\])?"
    r"((===|==|~=|!=|<=|>=|<|>)[A-Za-z0-9.*+!_-]+"
    r"(,(===|==|~=|!=|<=|>=|<|>)[A-Za-z0-9.*+!_-]+)*)?$"
)
# Absolute paths that need no quoting in a systemd unit or a shell command.
SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9._/+-]*$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
URL_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
# PEP 427: {distribution}-{version}(-{build})?-{python}-{abi}-{platform}.whl
WHEEL_RE = re.compile(
    r"^[A-Za-z0-9_.]+-[A-Za-z0-9_.!+]+(-[0-9][A-Za-z0-9_.]*)?"
    r"-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+\.whl$"
)

Engine = Literal["podman", "docker"]

DEFAULT_VENV = "/opt/signalbeam/venv"
DEFAULT_HUB_DATA_DIR = "/var/lib/signalbeam-hub"
DEFAULT_AGENT_DATA_DIR = "/var/lib/signalbeam-agent"
AGENT_CONFIG_PATH = "/etc/signalbeam/agent.toml"
HUB_ENV_PATH = "/etc/signalbeam/hub.env"
AGENT_CA_PATH = "/etc/signalbeam/hub-ca.pem"


class DeployDataError(ValueError):
    """A data variable is missing, mistyped or out of range; ``var`` names it."""

    def __init__(self, var: str, message: str) -> None:
        super().__init__(f"{var}: {message}")
        self.var = var
        self.message = message


@dataclass(frozen=True)
class PackageSettings:
    pip_spec: str = "signalbeam-edge"
    wheel: str | None = None  # local path of a wheel to upload instead of pip_spec
    # Local directory of wheels (the package's dependencies, maybe the package itself),
    # uploaded and installed from with `pip --no-index`: hosts without PyPI access.
    wheelhouse: str | None = None
    venv: str = DEFAULT_VENV
    python: str = "python3"

    @property
    def bin(self) -> str:
        return f"{self.venv}/bin"

    @property
    def remote_wheels(self) -> str:
        """Where uploaded wheels go on the host (beside the venv)."""
        return f"{Path(self.venv).parent}/wheels"


@dataclass(frozen=True)
class HubSettings:
    package: PackageSettings
    public_host: str
    user: str = "signalbeam"
    data_dir: str = DEFAULT_HUB_DATA_DIR
    client_port: int = 4222
    leafnode_port: int = 7422
    monitor_port: int = 8222
    http_port: int = 8080
    host: str = "0.0.0.0"
    http_host: str = "0.0.0.0"
    litestream: bool = True
    replica_url: str = ""
    # Environment for litestream (e.g. AWS_ACCESS_KEY_ID); secret, kept out of repr.
    replica_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    offline_grace: int = 90
    init_output: str = "/root/signalbeam-hub-init.txt"
    nofile: int = 65536
    # False: enable the units but never start, restart or daemon-reload them (a host that is
    # not running systemd yet: an image being built, a chroot).
    start_services: bool = True
    # Local (operator machine) PEM files for TLS on the leafnode listener; both or neither.
    leaf_tls_cert: str | None = None
    leaf_tls_key: str | None = None

    @property
    def leaf_tls(self) -> bool:
        return self.leaf_tls_cert is not None

    @property
    def remote_leaf_cert(self) -> str:
        """Where the certificate goes on the hub (hub.toml ``leaf_tls_cert``)."""
        return f"{self.data_dir}/tls/leaf-cert.pem"

    @property
    def remote_leaf_key(self) -> str:
        return f"{self.data_dir}/tls/leaf-key.pem"

    # Local PEM files for TLS on the client listener (operators, enrollment); both or
    # neither. Usually the same files as the leaf pair (one name, one certificate).
    client_tls_cert: str | None = None
    client_tls_key: str | None = None

    @property
    def client_tls(self) -> bool:
        return self.client_tls_cert is not None

    @property
    def remote_client_cert(self) -> str:
        """Where the certificate goes on the hub (hub.toml ``client_tls_cert``)."""
        return f"{self.data_dir}/tls/client-cert.pem"

    @property
    def remote_client_key(self) -> str:
        return f"{self.data_dir}/tls/client-key.pem"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.client_port, self.leafnode_port, self.monitor_port, self.http_port)

    @property
    def needs_bind_capability(self) -> bool:
        """Ports below 1024 need CAP_NET_BIND_SERVICE for the unprivileged hub user."""
        return any(p < 1024 for p in self.ports)


@dataclass(frozen=True)
class AgentSettings:
    package: PackageSettings
    engine: Engine = "podman"
    podman_dropin: bool = False
    device_id: str | None = None  # None: the agent derives it from the device's host name
    tags: tuple[str, ...] = ()
    hub: str | None = None  # HOST:PORT (or nats:// URL) of the hub's client port, to enroll
    hub_url: str | None = None  # [hub] url: direct mode instead of the supervised leaf
    enroll_token: str | None = field(default=None, repr=False)
    enroll_password: str | None = field(default=None, repr=False)
    data_dir: str = DEFAULT_AGENT_DATA_DIR
    engine_socket: str | None = None
    http_enabled: bool = True
    http_bind: str = "127.0.0.1"
    http_port: int = 48484
    config_path: str = AGENT_CONFIG_PATH
    start_services: bool = True  # as HubSettings.start_services
    # Local PEM file: the CA (or self-signed hub certificate) the hub's leaf certificate must
    # chain to; uploaded to AGENT_CA_PATH and set as [hub] ca_file.
    hub_ca_file: str | None = None

    @property
    def remote_ca_file(self) -> str | None:
        return AGENT_CA_PATH if self.hub_ca_file else None

    @property
    def credentials_file(self) -> str:
        """Where `signalbeam-agent enroll` writes the device's credentials (the default of
        ``[hub] credentials_file``, which the template does not change)."""
        return f"{self.data_dir}/hub-credentials.json"

    @property
    def enrolls(self) -> bool:
        return self.enroll_token is not None


# Every variable either deploy reads; anything else with the prefix is a typo.
PACKAGE_VARS = frozenset(
    {
        "signalbeam_pip_spec",
        "signalbeam_wheel",
        "signalbeam_wheelhouse",
        "signalbeam_venv",
        "signalbeam_python",
        "signalbeam_start_services",
    }
)
HUB_VARS = frozenset(
    {
        "signalbeam_hub_user",
        "signalbeam_hub_data_dir",
        "signalbeam_hub_public_host",
        "signalbeam_hub_client_port",
        "signalbeam_hub_leafnode_port",
        "signalbeam_hub_monitor_port",
        "signalbeam_hub_http_port",
        "signalbeam_hub_host",
        "signalbeam_hub_http_host",
        "signalbeam_hub_litestream",
        "signalbeam_hub_replica_url",
        "signalbeam_hub_replica_env",
        "signalbeam_hub_offline_grace",
        "signalbeam_hub_init_output",
        "signalbeam_hub_nofile",
        "signalbeam_hub_leaf_tls_cert",
        "signalbeam_hub_leaf_tls_key",
        "signalbeam_hub_client_tls_cert",
        "signalbeam_hub_client_tls_key",
    }
)
AGENT_VARS = frozenset(
    {
        "signalbeam_engine",
        "signalbeam_podman_dropin",
        "signalbeam_device_id",
        "signalbeam_tags",
        "signalbeam_hub",
        "signalbeam_hub_url",
        "signalbeam_enroll_token",
        "signalbeam_enroll_password",
        "signalbeam_agent_data_dir",
        "signalbeam_engine_socket",
        "signalbeam_http_enabled",
        "signalbeam_http_bind",
        "signalbeam_http_port",
        "signalbeam_hub_ca_file",
    }
)
KNOWN_VARS = PACKAGE_VARS | HUB_VARS | AGENT_VARS


# ---------------------------------------------------------------- field readers


def _check_known(data: Mapping[str, Any]) -> None:
    unknown = sorted(k for k in data if k.startswith(PREFIX) and k not in KNOWN_VARS)
    if unknown:
        raise DeployDataError(unknown[0], "unknown variable (see docs/deploy.md for the list)")


def _get(data: Mapping[str, Any], var: str) -> Any:
    # None counts as unset: `--data signalbeam_x=` and group data `x = None` mean "default".
    return data.get(var)


def _str(data: Mapping[str, Any], var: str, default: str | None) -> str | None:
    value = _get(data, var)
    if value is None:
        return default
    if not isinstance(value, str) or not value.strip():
        raise DeployDataError(var, "must be a non-empty string")
    if any(c in value for c in "\n\r\0"):
        raise DeployDataError(var, "must be one line")
    return value.strip()


def _bool(data: Mapping[str, Any], var: str, default: bool) -> bool:
    value = _get(data, var)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    # `pyinfra --data key=value` hands every value over as a string.
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    raise DeployDataError(var, "must be true or false")


def _int(data: Mapping[str, Any], var: str, default: int, lo: int, hi: int, what: str) -> int:
    value = _get(data, var)
    if value is None:
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise DeployDataError(var, f"must be {what} ({lo}-{hi})")
    return value


def _port(data: Mapping[str, Any], var: str, default: int) -> int:
    return _int(data, var, default, 1, 65535, "a TCP port")


def _path(data: Mapping[str, Any], var: str, default: str) -> str:
    value = _str(data, var, default)
    assert value is not None
    if not SAFE_PATH_RE.fullmatch(value) or "/../" in value + "/" or value.rstrip("/") == "":
        raise DeployDataError(
            var, "must be an absolute path of letters, digits and . _ / + - (no spaces)"
        )
    return value.rstrip("/")


def _ip(data: Mapping[str, Any], var: str, default: str) -> str:
    value = _str(data, var, default)
    assert value is not None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise DeployDataError(var, f"must be an IP address, got {value!r}") from None
    return value


def _host(value: str, var: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not HOSTNAME_RE.fullmatch(value):
        raise DeployDataError(var, f"must be a host name or IP address, got {value!r}")
    return value


def _list_of_str(data: Mapping[str, Any], var: str) -> list[str]:
    value = _get(data, var)
    if value is None:
        return []
    if isinstance(value, str):  # `--data signalbeam_tags=lab,rpi`
        value = [t.strip() for t in value.split(",") if t.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(t, str) for t in value):
        raise DeployDataError(var, "must be a list of strings")
    return list(value)


PEM_CERT = "-----BEGIN CERTIFICATE-----"


def _local_file(data: Mapping[str, Any], var: str) -> tuple[str, str] | None:
    """A readable file on this machine: (path, text), or None when unset."""
    path = _str(data, var, None)
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        raise DeployDataError(var, f"file not found on this machine: {path}")
    try:
        return str(p), p.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise DeployDataError(var, f"cannot read {path}: {exc.strerror or exc}") from None


def _tls_pair(data: Mapping[str, Any], listener: str) -> tuple[str | None, str | None]:
    """``signalbeam_hub_<listener>_tls_cert``/``_key``: both or neither, the key matching."""
    cert_var, key_var = f"signalbeam_hub_{listener}_tls_cert", f"signalbeam_hub_{listener}_tls_key"
    cert = _local_file(data, cert_var)
    key = _local_file(data, key_var)
    if cert is None and key is None:
        return None, None
    if cert is None:
        raise DeployDataError(cert_var, f"is required with {key_var}")
    if key is None:
        raise DeployDataError(key_var, f"is required with {cert_var}")
    if PEM_CERT not in cert[1]:
        raise DeployDataError(cert_var, f"{cert[0]} is not a PEM certificate")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert[0], key[0])
    except ssl.SSLError as exc:
        raise DeployDataError(
            key_var,
            f"{key[0]} is not a PEM private key matching {cert[0]} ({exc.reason or exc})",
        ) from None
    return cert[0], key[0]


def _ca_file(data: Mapping[str, Any], var: str) -> str | None:
    found = _local_file(data, var)
    if found is None:
        return None
    path, text = found
    if PEM_CERT not in text:
        raise DeployDataError(var, f"{path} holds no PEM certificate")
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        raise DeployDataError(
            var, f"{path} is not a valid PEM CA bundle ({exc.reason or exc})"
        ) from None
    return path


# ---------------------------------------------------------------- the two deploys


def package_settings(data: Mapping[str, Any]) -> PackageSettings:
    spec = _str(data, "signalbeam_pip_spec", PackageSettings.pip_spec)
    assert spec is not None
    if not PIP_SPEC_RE.fullmatch(spec):
        raise DeployDataError(
            "signalbeam_pip_spec",
            f"must be one pip requirement such as 'signalbeam-edge' or "
            f"'signalbeam-edge==0.2.0', got {spec!r}",
        )
    wheel = _str(data, "signalbeam_wheel", None)
    if wheel is not None:
        name = Path(wheel).name
        if not WHEEL_RE.fullmatch(name):
            raise DeployDataError(
                "signalbeam_wheel",
                f"must be the path of a wheel (NAME-VERSION-PY-ABI-PLATFORM.whl), got {wheel!r}",
            )
        if not Path(wheel).is_file():
            raise DeployDataError("signalbeam_wheel", f"no such file on this machine: {wheel}")
    wheelhouse = _str(data, "signalbeam_wheelhouse", None)
    if wheelhouse is not None:
        found = Path(wheelhouse)
        if not found.is_dir():
            raise DeployDataError(
                "signalbeam_wheelhouse", f"no such directory on this machine: {wheelhouse}"
            )
        if not any(WHEEL_RE.fullmatch(w.name) for w in found.glob("*.whl")):
            raise DeployDataError("signalbeam_wheelhouse", f"holds no wheel: {wheelhouse}")
    venv = _path(data, "signalbeam_venv", DEFAULT_VENV)
    python = _str(data, "signalbeam_python", PackageSettings.python)
    assert python is not None
    if not re.fullmatch(r"^[A-Za-z0-9._/+-]+$", python):
        raise DeployDataError("signalbeam_python", f"must be a command or path, got {python!r}")
    return PackageSettings(
        pip_spec=spec, wheel=wheel, wheelhouse=wheelhouse, venv=venv, python=python
    )


def validate_hub(data: Mapping[str, Any], *, inventory_name: str | None = None) -> HubSettings:
    """The hub deploy's settings. ``inventory_name`` (the host's name in the inventory) is
    the default public host when it looks like one."""
    _check_known(data)
    package = package_settings(data)
    user = _str(data, "signalbeam_hub_user", HubSettings.user)
    assert user is not None
    if not USER_RE.fullmatch(user) or user == "root":
        raise DeployDataError(
            "signalbeam_hub_user", f"must be a system user name other than root, got {user!r}"
        )
    default_public = None
    if inventory_name and not inventory_name.startswith("@"):
        default_public = inventory_name
    public_host = _str(data, "signalbeam_hub_public_host", default_public)
    if public_host is None:
        raise DeployDataError(
            "signalbeam_hub_public_host",
            "is required: the host name or address devices and operators use to reach the hub",
        )
    _host(public_host, "signalbeam_hub_public_host")
    ports = {
        var: _port(data, var, default)
        for var, default in (
            ("signalbeam_hub_client_port", 4222),
            ("signalbeam_hub_leafnode_port", 7422),
            ("signalbeam_hub_monitor_port", 8222),
            ("signalbeam_hub_http_port", 8080),
        )
    }
    seen: dict[int, str] = {}
    for var, port in ports.items():
        if port in seen:
            raise DeployDataError(var, f"port {port} is already used by {seen[port]}")
        seen[port] = var
    litestream = _bool(data, "signalbeam_hub_litestream", True)
    replica_url = _str(data, "signalbeam_hub_replica_url", "") or ""
    if replica_url:
        if not litestream:
            raise DeployDataError(
                "signalbeam_hub_replica_url", "is set but signalbeam_hub_litestream is false"
            )
        if not URL_SCHEME_RE.fullmatch(replica_url):
            raise DeployDataError(
                "signalbeam_hub_replica_url",
                f"must be a litestream replica URL such as s3://bucket/hub, got {replica_url!r}",
            )
    env_raw = _get(data, "signalbeam_hub_replica_env")
    replica_env: dict[str, str] = {}
    if env_raw is not None:
        if not isinstance(env_raw, Mapping):
            raise DeployDataError("signalbeam_hub_replica_env", "must be a dict of NAME: value")
        for name, value in env_raw.items():
            var = f"signalbeam_hub_replica_env[{name!r}]"
            if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
                raise DeployDataError(var, "name must be upper case letters, digits and _")
            if not isinstance(value, str) or any(c in value for c in "\n\r\0"):
                raise DeployDataError(var, "value must be a one-line string")
            replica_env[name] = value
    leaf_cert, leaf_key = _tls_pair(data, "leaf")
    client_cert, client_key = _tls_pair(data, "client")
    return HubSettings(
        package=package,
        public_host=public_host,
        user=user,
        data_dir=_path(data, "signalbeam_hub_data_dir", DEFAULT_HUB_DATA_DIR),
        client_port=ports["signalbeam_hub_client_port"],
        leafnode_port=ports["signalbeam_hub_leafnode_port"],
        monitor_port=ports["signalbeam_hub_monitor_port"],
        http_port=ports["signalbeam_hub_http_port"],
        host=_ip(data, "signalbeam_hub_host", HubSettings.host),
        http_host=_ip(data, "signalbeam_hub_http_host", HubSettings.http_host),
        litestream=litestream,
        replica_url=replica_url,
        replica_env=replica_env,
        offline_grace=_int(
            data, "signalbeam_hub_offline_grace", HubSettings.offline_grace, 1, 7 * 86400, "seconds"
        ),
        init_output=_path(data, "signalbeam_hub_init_output", HubSettings.init_output),
        nofile=_int(data, "signalbeam_hub_nofile", HubSettings.nofile, 1024, 1 << 20, "a count"),
        start_services=_bool(data, "signalbeam_start_services", True),
        leaf_tls_cert=leaf_cert,
        leaf_tls_key=leaf_key,
        client_tls_cert=client_cert,
        client_tls_key=client_key,
    )


def validate_agent(data: Mapping[str, Any]) -> AgentSettings:
    """The agent deploy's settings."""
    _check_known(data)
    package = package_settings(data)
    engine = _str(data, "signalbeam_engine", "podman")
    if engine not in ("podman", "docker"):
        raise DeployDataError("signalbeam_engine", f"must be 'podman' or 'docker', got {engine!r}")
    dropin = _bool(data, "signalbeam_podman_dropin", False)
    if dropin and engine != "podman":
        raise DeployDataError(
            "signalbeam_podman_dropin", "applies only to signalbeam_engine=podman"
        )
    device_id = _str(data, "signalbeam_device_id", None)
    if device_id is not None and not DEVICE_ID_RE.fullmatch(device_id):
        raise DeployDataError(
            "signalbeam_device_id",
            "must be 1-63 characters of a-z, 0-9 and '-', starting and ending alphanumeric, "
            f"got {device_id!r}",
        )
    tags = _list_of_str(data, "signalbeam_tags")
    if len(tags) > MAX_TAGS:
        raise DeployDataError("signalbeam_tags", f"at most {MAX_TAGS} tags")
    for i, tag in enumerate(tags):
        if not TAG_RE.fullmatch(tag):
            raise DeployDataError(
                f"signalbeam_tags[{i}]",
                f"must be 1-64 characters of A-Z a-z 0-9 . _ : -, got {tag!r}",
            )
    hub = _str(data, "signalbeam_hub", None)
    if hub is not None:
        m = re.fullmatch(r"^(?:(?:nats|tls)://(?:[^@/\s]+@)?)?([^:/@\s]+):(\d{1,5})$", hub)
        if not m or not 1 <= int(m.group(2)) <= 65535:
            raise DeployDataError(
                "signalbeam_hub",
                "must be HOST:PORT of the hub's NATS client port, tls://HOST:PORT to insist on "
                "TLS, or the nats:// or tls://enroll:...@host:port URL `signalbeam-hub init` "
                "printed",
            )
        _host(m.group(1), "signalbeam_hub")
    hub_url = _str(data, "signalbeam_hub_url", None)
    if hub_url is not None and not re.fullmatch(r"^(nats|tls|ws|wss)://\S+$", hub_url):
        raise DeployDataError(
            "signalbeam_hub_url", "must be a nats://, tls://, ws:// or wss:// URL"
        )
    token = _str(data, "signalbeam_enroll_token", None)
    password = _str(data, "signalbeam_enroll_password", None)
    if token is not None and hub is None:
        raise DeployDataError(
            "signalbeam_hub", "is required with signalbeam_enroll_token (where to enroll)"
        )
    if token is not None and password is None and "@" not in (hub or ""):
        raise DeployDataError(
            "signalbeam_enroll_password",
            "is required with signalbeam_enroll_token: the password of the hub's `enroll` "
            "bootstrap user (in the enroll URL `signalbeam-hub init` printed)",
        )
    engine_socket = _str(data, "signalbeam_engine_socket", None)
    if engine_socket is not None and not re.fullmatch(
        r"^(unix://|tcp://|https?://|/)[^\s\"'\\]*$", engine_socket
    ):
        raise DeployDataError(
            "signalbeam_engine_socket",
            "must be an absolute socket path or a unix://, tcp:// or http(s):// URL",
        )
    return AgentSettings(
        package=package,
        engine=cast(Engine, engine),
        podman_dropin=dropin,
        device_id=device_id,
        tags=tuple(tags),
        hub=hub,
        hub_url=hub_url,
        enroll_token=token,
        enroll_password=password,
        data_dir=_path(data, "signalbeam_agent_data_dir", DEFAULT_AGENT_DATA_DIR),
        engine_socket=engine_socket,
        http_enabled=_bool(data, "signalbeam_http_enabled", True),
        http_bind=_ip(data, "signalbeam_http_bind", AgentSettings.http_bind),
        http_port=_port(data, "signalbeam_http_port", AgentSettings.http_port),
        start_services=_bool(data, "signalbeam_start_services", True),
        hub_ca_file=_ca_file(data, "signalbeam_hub_ca_file"),
    )
