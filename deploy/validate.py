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

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from deploy.fields import (
    DeployDataError,
    check_host,
    get_var,
    read_bool,
    read_ca_file,
    read_int,
    read_ip,
    read_path,
    read_port,
    read_str,
    read_str_list,
    read_tls_pair,
)
from deploy.settings import (
    DEFAULT_AGENT_DATA_DIR,
    DEFAULT_HUB_DATA_DIR,
    DEFAULT_VENV,
    AgentSettings,
    Engine,
    HubSettings,
    PackageSettings,
)

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
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
URL_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
# PEP 427: {distribution}-{version}(-{build})?-{python}-{abi}-{platform}.whl
WHEEL_RE = re.compile(
    r"^[A-Za-z0-9_.]+-[A-Za-z0-9_.!+]+(-[0-9][A-Za-z0-9_.]*)?"
    r"-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+\.whl$"
)


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
        "signalbeam_hub_workers",
        "signalbeam_hub_cluster_hosts",
        "signalbeam_hub_cluster_port",
        "signalbeam_hub_cluster_node",
        "signalbeam_hub_cluster_files",
        "signalbeam_hub_init_output",
        "signalbeam_hub_nats_auth",
        "signalbeam_hub_require_signed_bundles",
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


def read_nats_auth(data: Mapping[str, Any]) -> str | None:
    """``signalbeam_hub_nats_auth``: "jwt" or "password", or unset (keep the hub's)."""
    var = "signalbeam_hub_nats_auth"
    value = read_str(data, var, None)
    if value is not None and value not in ("jwt", "password"):
        raise DeployDataError(var, f"must be 'jwt' or 'password', got {value!r}")
    return value


def read_cluster_hosts(data: Mapping[str, Any]) -> tuple[str, ...]:
    """``signalbeam_hub_cluster_hosts``: 3 or more node addresses, the first this hub's own
    (docs/deploy.md "A hub NATS cluster"), or none."""
    var = "signalbeam_hub_cluster_hosts"
    raw = get_var(data, var)
    if raw is None or raw == []:
        return ()
    if not isinstance(raw, list | tuple) or not all(isinstance(h, str) for h in raw):
        raise DeployDataError(var, "must be a list of host names or addresses, one per node")
    if len(raw) < 3:
        raise DeployDataError(var, f"a cluster needs at least 3 nodes, got {len(raw)}")
    for i, host in enumerate(raw):
        check_host(host, f"{var}[{i}]")
    if len(set(raw)) != len(raw):
        raise DeployDataError(var, "names a host twice (one node per machine)")
    return tuple(raw)


def check_known(data: Mapping[str, Any]) -> None:
    unknown = sorted(k for k in data if k.startswith(PREFIX) and k not in KNOWN_VARS)
    if unknown:
        raise DeployDataError(unknown[0], "unknown variable (see docs/deploy.md for the list)")


# ---------------------------------------------------------------- the two deploys


def package_settings(data: Mapping[str, Any]) -> PackageSettings:
    spec = read_str(data, "signalbeam_pip_spec", PackageSettings.pip_spec)
    assert spec is not None
    if not PIP_SPEC_RE.fullmatch(spec):
        raise DeployDataError(
            "signalbeam_pip_spec",
            f"must be one pip requirement such as 'signalbeam-edge' or "
            f"'signalbeam-edge==0.2.0', got {spec!r}",
        )
    wheel = read_str(data, "signalbeam_wheel", None)
    if wheel is not None:
        name = Path(wheel).name
        if not WHEEL_RE.fullmatch(name):
            raise DeployDataError(
                "signalbeam_wheel",
                f"must be the path of a wheel (NAME-VERSION-PY-ABI-PLATFORM.whl), got {wheel!r}",
            )
        if not Path(wheel).is_file():
            raise DeployDataError("signalbeam_wheel", f"no such file on this machine: {wheel}")
    wheelhouse = read_str(data, "signalbeam_wheelhouse", None)
    if wheelhouse is not None:
        found = Path(wheelhouse)
        if not found.is_dir():
            raise DeployDataError(
                "signalbeam_wheelhouse", f"no such directory on this machine: {wheelhouse}"
            )
        if not any(WHEEL_RE.fullmatch(w.name) for w in found.glob("*.whl")):
            raise DeployDataError("signalbeam_wheelhouse", f"holds no wheel: {wheelhouse}")
    venv = read_path(data, "signalbeam_venv", DEFAULT_VENV)
    python = read_str(data, "signalbeam_python", PackageSettings.python)
    assert python is not None
    if not re.fullmatch(r"^[A-Za-z0-9._/+-]+$", python):
        raise DeployDataError("signalbeam_python", f"must be a command or path, got {python!r}")
    return PackageSettings(
        pip_spec=spec, wheel=wheel, wheelhouse=wheelhouse, venv=venv, python=python
    )


def validate_hub(data: Mapping[str, Any], *, inventory_name: str | None = None) -> HubSettings:
    """The hub deploy's settings. ``inventory_name`` (the host's name in the inventory) is
    the default public host when it looks like one."""
    check_known(data)
    package = package_settings(data)
    user = read_str(data, "signalbeam_hub_user", HubSettings.user)
    assert user is not None
    if not USER_RE.fullmatch(user) or user == "root":
        raise DeployDataError(
            "signalbeam_hub_user", f"must be a system user name other than root, got {user!r}"
        )
    default_public = None
    if inventory_name and not inventory_name.startswith("@"):
        default_public = inventory_name
    public_host = read_str(data, "signalbeam_hub_public_host", default_public)
    if public_host is None:
        raise DeployDataError(
            "signalbeam_hub_public_host",
            "is required: the host name or address devices and operators use to reach the hub",
        )
    check_host(public_host, "signalbeam_hub_public_host")
    ports = {
        var: read_port(data, var, default)
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
    litestream = read_bool(data, "signalbeam_hub_litestream", True)
    replica_url = read_str(data, "signalbeam_hub_replica_url", "") or ""
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
    env_raw = get_var(data, "signalbeam_hub_replica_env")
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
    leaf_cert, leaf_key = read_tls_pair(data, "leaf")
    client_cert, client_key = read_tls_pair(data, "client")
    cluster_hosts = read_cluster_hosts(data)
    cluster_port = read_port(data, "signalbeam_hub_cluster_port", HubSettings.cluster_port)
    if cluster_hosts and cluster_port in seen:
        raise DeployDataError(
            "signalbeam_hub_cluster_port", f"port {cluster_port} is already used by"
            f" {seen[cluster_port]}"
        )  # fmt: skip
    node = read_int(data, "signalbeam_hub_cluster_node", 0, 0, 63, "a node index")
    if node and node >= len(cluster_hosts):
        raise DeployDataError(
            "signalbeam_hub_cluster_node",
            f"node {node} is not in signalbeam_hub_cluster_hosts"
            + (f" (0-{len(cluster_hosts) - 1})" if cluster_hosts else " (no cluster)"),
        )
    workers = read_int(data, "signalbeam_hub_workers", HubSettings.workers, 1, 64, "a count")
    if node and workers > 1:
        raise DeployDataError(
            "signalbeam_hub_workers", "hub workers run on node 0; nodes 1 and up run nats-server"
        )
    default_files = (
        str(
            Path.home()
            / ".local/state/signalbeam"
            / f"cluster-{cluster_hosts[0].replace(':', '_')}"
        )
        if cluster_hosts
        else ""
    )
    cluster_files = (
        read_path(data, "signalbeam_hub_cluster_files", default_files) if cluster_hosts else ""
    )
    return HubSettings(
        package=package,
        public_host=public_host,
        user=user,
        data_dir=read_path(data, "signalbeam_hub_data_dir", DEFAULT_HUB_DATA_DIR),
        client_port=ports["signalbeam_hub_client_port"],
        leafnode_port=ports["signalbeam_hub_leafnode_port"],
        monitor_port=ports["signalbeam_hub_monitor_port"],
        http_port=ports["signalbeam_hub_http_port"],
        host=read_ip(data, "signalbeam_hub_host", HubSettings.host),
        http_host=read_ip(data, "signalbeam_hub_http_host", HubSettings.http_host),
        litestream=litestream,
        replica_url=replica_url,
        replica_env=replica_env,
        offline_grace=read_int(
            data, "signalbeam_hub_offline_grace", HubSettings.offline_grace, 1, 7 * 86400, "seconds"
        ),
        workers=workers,
        cluster_hosts=cluster_hosts,
        cluster_node=node,
        cluster_port=cluster_port,
        cluster_files=cluster_files,
        init_output=read_path(data, "signalbeam_hub_init_output", HubSettings.init_output),
        nats_auth=read_nats_auth(data),
        require_signed_bundles=(
            None
            if get_var(data, "signalbeam_hub_require_signed_bundles") is None
            else read_bool(data, "signalbeam_hub_require_signed_bundles", True)
        ),
        nofile=read_int(
            data, "signalbeam_hub_nofile", HubSettings.nofile, 1024, 1 << 20, "a count"
        ),
        start_services=read_bool(data, "signalbeam_start_services", True),
        leaf_tls_cert=leaf_cert,
        leaf_tls_key=leaf_key,
        client_tls_cert=client_cert,
        client_tls_key=client_key,
    )


def validate_agent(data: Mapping[str, Any]) -> AgentSettings:
    """The agent deploy's settings."""
    check_known(data)
    package = package_settings(data)
    engine = read_str(data, "signalbeam_engine", "podman")
    if engine not in ("podman", "docker"):
        raise DeployDataError("signalbeam_engine", f"must be 'podman' or 'docker', got {engine!r}")
    dropin = read_bool(data, "signalbeam_podman_dropin", False)
    if dropin and engine != "podman":
        raise DeployDataError(
            "signalbeam_podman_dropin", "applies only to signalbeam_engine=podman"
        )
    device_id = read_str(data, "signalbeam_device_id", None)
    if device_id is not None and not DEVICE_ID_RE.fullmatch(device_id):
        raise DeployDataError(
            "signalbeam_device_id",
            "must be 1-63 characters of a-z, 0-9 and '-', starting and ending alphanumeric, "
            f"got {device_id!r}",
        )
    tags = read_str_list(data, "signalbeam_tags")
    if len(tags) > MAX_TAGS:
        raise DeployDataError("signalbeam_tags", f"at most {MAX_TAGS} tags")
    for i, tag in enumerate(tags):
        if not TAG_RE.fullmatch(tag):
            raise DeployDataError(
                f"signalbeam_tags[{i}]",
                f"must be 1-64 characters of A-Z a-z 0-9 . _ : -, got {tag!r}",
            )
    hub = read_str(data, "signalbeam_hub", None)
    if hub is not None:
        m = re.fullmatch(r"^(?:(?:nats|tls)://(?:[^@/\s]+@)?)?([^:/@\s]+):(\d{1,5})$", hub)
        if not m or not 1 <= int(m.group(2)) <= 65535:
            raise DeployDataError(
                "signalbeam_hub",
                "must be HOST:PORT of the hub's NATS client port, tls://HOST:PORT to insist on "
                "TLS, or the nats:// or tls://enroll:...@host:port URL `signalbeam-hub init` "
                "printed",
            )
        check_host(m.group(1), "signalbeam_hub")
    hub_url = read_str(data, "signalbeam_hub_url", None)
    if hub_url is not None and not re.fullmatch(r"^(nats|tls|ws|wss)://\S+$", hub_url):
        raise DeployDataError(
            "signalbeam_hub_url", "must be a nats://, tls://, ws:// or wss:// URL"
        )
    token = read_str(data, "signalbeam_enroll_token", None)
    password = read_str(data, "signalbeam_enroll_password", None)
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
    engine_socket = read_str(data, "signalbeam_engine_socket", None)
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
        data_dir=read_path(data, "signalbeam_agent_data_dir", DEFAULT_AGENT_DATA_DIR),
        engine_socket=engine_socket,
        http_enabled=read_bool(data, "signalbeam_http_enabled", True),
        http_bind=read_ip(data, "signalbeam_http_bind", AgentSettings.http_bind),
        http_port=read_port(data, "signalbeam_http_port", AgentSettings.http_port),
        start_services=read_bool(data, "signalbeam_start_services", True),
        hub_ca_file=read_ca_file(data, "signalbeam_hub_ca_file"),
    )
