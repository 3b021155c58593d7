"""The settings the two SignalBeam deploys run with: what ``deploy.validate`` makes of the
pyinfra data variables, and the fixed paths on the hosts.

Frozen dataclasses with the defaults an empty inventory gets; ``deploy.render`` and
``deploy.commands`` read them, never the raw variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Engine = Literal["podman", "docker"]

DEFAULT_VENV = "/opt/signalbeam/venv"
DEFAULT_HUB_DATA_DIR = "/var/lib/signalbeam-hub"
DEFAULT_AGENT_DATA_DIR = "/var/lib/signalbeam-agent"
AGENT_CONFIG_PATH = "/etc/signalbeam/agent.toml"
HUB_ENV_PATH = "/etc/signalbeam/hub.env"
AGENT_CA_PATH = "/etc/signalbeam/hub-ca.pem"


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
    # Hub workers (docs/architecture.md "Scale path"): > 1 runs signalbeam-hub.service as
    # `signalbeam-hub nats` and signalbeam-hub-worker@0..N-1.service beside it.
    workers: int = 1
    # A hub NATS cluster (docs/hub.md "NATS cluster"): the nodes' addresses, one a node
    # (empty: one nats-server); this deploy runs node ``cluster_node`` with the hub.
    cluster_hosts: tuple[str, ...] = ()
    cluster_node: int = 0
    cluster_port: int = 6222
    # Local directory (operator's machine, 0700) where node 0's deploy fetches the other
    # nodes' configs and route certificates, and from where theirs upload them.
    cluster_files: str = ""
    # How NATS logins are checked and whether new devices require signed bundles
    # (docs/security.md). None: a new hub gets init's defaults (jwt, true); a hub deployed
    # before keeps what its hub.toml says (without the key: password, false), so a redeploy
    # never strands devices that have not moved to their own key yet.
    nats_auth: str | None = None
    require_signed_bundles: bool | None = None
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
    def runs_hub(self) -> bool:
        """Whether this host runs the hub (one hub, or node 0 of a cluster); the other nodes
        of a cluster run only their nats-server (docs/deploy.md "A hub NATS cluster")."""
        return self.cluster_node == 0

    def remote_node_conf(self, index: int) -> str:
        return f"{self.data_dir}/nats/node{index}.conf"

    @property
    def remote_route_dir(self) -> str:
        return f"{self.data_dir}/tls/route"

    def node_files(self, index: int) -> list[tuple[str, str]]:
        """What node ``index``'s machine needs from node 0 (file name in ``cluster_files``,
        path on the host): its config, its route certificate and key, the route CA. Never
        the CA key or another node's key."""
        route = self.remote_route_dir
        return [
            (f"node{index}.conf", self.remote_node_conf(index)),
            ("route-ca.pem", f"{route}/ca.pem"),
            (f"node{index}-cert.pem", f"{route}/node{index}-cert.pem"),
            (f"node{index}-key.pem", f"{route}/node{index}-key.pem"),
        ]

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
