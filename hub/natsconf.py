"""The hub's nats-server configuration, generated from the hub config and a list of users.

Choices (see docs/hub.md):
- Written as JSON, which the nats-server config parser accepts: quoting is always right.
- JetStream on, domain ``hub``, storage under the data dir, so devices' leaf servers address
  the hub's streams and KV as ``domain: hub``.
- One account, ``SIGNALBEAM``, with JetStream enabled, holds every user. Permissions (not
  account boundaries) keep operators, the enrollment bootstrap user and devices apart; the
  sync issue adds one user per device through ``extra_users`` and reloads.
- The leafnode listener has ``no_advertise: true`` (behind NAT the advertised address is wrong,
  and a link-cut proxy must not be bypassed) and authenticates leaf links against the same
  account users, so a device's leaf logs in with the device's own credentials.
- With ``leaf_tls_cert``/``leaf_tls_key`` set, the leafnode listener requires TLS (a plain
  leaf is refused) and devices are handed a ``tls://`` leaf URL at enrollment. The TLS
  timeout (both listeners) is 5 s, not nats-server's 2 s: a handshake over a cellular link
  can take that long.
- With ``client_tls_cert``/``client_tls_key`` set, the top-level ``tls {}`` block makes the
  client listener TLS-only: operators, enrollment, and the hub's own loopback connection,
  which trusts its own certificate file (nats-server has one client listener; its
  ``allow_non_tls`` would let remote plain clients in as well). ``client_url``/``hub_url``
  then say ``tls://``, so clients refuse a plain fallback.
- ``max_payload`` is 2 MiB so the API can answer an oversized (> 1 MiB) body with a clear
  ``too_large`` error instead of the client failing before sending.
- Every password is written as a bcrypt hash (nats-server checks ``$2a$`` passwords with
  bcrypt): neither the config file nor the DB rows it is made from hand out a login. Cost 4,
  bcrypt's least: every password is >= 192 random bits, so the work factor adds nothing
  against guessing, while a fleet reconnecting after a hub restart pays it once per login
  (bench/bench_nats_login.py, loaded 2-core machine: p50 login 12 ms plain, 11 ms at cost
  4, 430 ms at the usual 10).
- Each kind of client has its own reply-inbox prefix (``protocol.subjects.INBOX_*``) and may
  subscribe only under it: no login can read replies meant for another (issue 19). A shared
  login (every operator, every enrolling device) still sees its peers' replies, so no reply
  carries a secret: the requester makes the secret and sends it (docs/sync.md).
- A cluster (``cluster_hosts``, docs/hub.md "NATS cluster"): one config per node, the same
  users or operator trust on every node, routes to every other node (authenticated with the
  ``route`` login), JetStream on each (every node has its own store and, in operator mode,
  its own ``full`` resolver directory: account JWT updates spread through the system account
  to every node), a leafnode listener on each. Nodes are ``signalbeam-hub-<i>``.
- With ``route_tls`` the routes are TLS, verified both ways against the cluster's own CA
  (``DATA/tls/route/``, made by ``init``): the route password alone no longer lets a server
  join, and route traffic (every replicated stream write) is encrypted.
- Hub workers (``workers`` > 1): the account maps ``sb.dev.*.heartbeat`` to
  ``sb.dev.<id>.heartbeat.<partition(M)>`` (``natsjwt.heartbeat_mappings``; JWT mode: the
  account JWT's ``mappings``), so each worker receives its own partition's heartbeats.
- The renderer refuses a user name or subject that is not a valid NATS subject: one bad
  device row must never produce a config nats-server rejects on every reload.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bcrypt

from hub import natsjwt
from hub.config import DataDir, HubConfig, Secrets, write_private
from hub.natsjwt import HubKeys
from protocol.subjects import (
    API_ALL,
    ENROLL,
    FLEET_CHANGES_ALL,
    INBOX_ENROLL,
    INBOX_OPERATOR,
    JS_DOMAIN,
    SERVICE_DISCOVERY_ALL,
    inbox_all,
    valid_device_id,
    valid_subject,
)
from sbutil.private import private_dir

ACCOUNT = "SIGNALBEAM"
HUB_USER = "hub"
OPERATOR_USER = "operator"
ENROLL_USER = "enroll"
MAX_PAYLOAD = 2 * 1024 * 1024
TLS_TIMEOUT = 5  # both listeners
BCRYPT_ROUNDS = 4  # see the module docstring
# What nats-server takes for a bcrypt hash (server/auth.go): "$2a$", "$2b$", "$2x$", "$2y$".
_BCRYPT_RE = re.compile(r"\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}")


ROUTE_USER = "route"


@dataclass(frozen=True)
class Node:
    """One nats-server of the hub: the only one, or a cluster node."""

    index: int
    host: str  # where devices, operators and the other nodes reach it
    client_port: int
    leafnode_port: int
    monitor_port: int
    cluster_port: int
    clustered: bool

    @property
    def name(self) -> str:
        return f"signalbeam-hub-{self.index}" if self.clustered else "signalbeam-hub"

    def route_url(self, password: str) -> str:
        return f"nats-route://{ROUTE_USER}:{quote(password, safe='')}@{bracket(self.host)}:{self.cluster_port}"


def bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def nodes(cfg: HubConfig) -> list[Node]:
    """The hub's nats-servers: one (``public_host``, the configured ports), or the cluster's.
    Cluster nodes sharing a host (one machine's loopback) take the ports plus their index."""
    if not cfg.clustered:
        return [
            Node(
                0,
                cfg.public_host,
                cfg.client_port,
                cfg.leafnode_port,
                cfg.monitor_port,
                cfg.cluster_port,
                False,
            )
        ]
    shared = len(set(cfg.cluster_hosts)) < len(cfg.cluster_hosts)
    out = []
    for i, host in enumerate(cfg.cluster_hosts):
        step = i if shared else 0
        out.append(
            Node(
                i,
                host,
                cfg.client_port + step,
                cfg.leafnode_port + step,
                cfg.monitor_port + step,
                cfg.cluster_port + step,
                True,
            )
        )
    return out


def local_nodes(cfg: HubConfig) -> list[Node]:
    """The nodes this hub process runs as its children."""
    every = nodes(cfg)
    return every if not cfg.clustered else [every[i] for i in cfg.cluster_local]


def conf_path(cfg: HubConfig, data: DataDir, node: Node) -> Path:
    return data.node_conf(node.index) if cfg.clustered else data.nats_conf


class BadUser(ValueError):
    """A user that must not reach the nats-server config (its name or a subject is not a
    valid NATS subject token, or its password is not a hash)."""


def is_hash(password: str) -> bool:
    return _BCRYPT_RE.fullmatch(password) is not None


def hash_password(password: str) -> str:
    """The bcrypt hash nats-server checks a login against (a new salt each call)."""
    return bcrypt.hashpw(
        password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS, prefix=b"2a")
    ).decode()


def check_password(password: str, hashed: str) -> bool:
    """Whether ``password`` is the one ``hash_password`` hashed (a malformed hash: no)."""
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:
        return False


@functools.lru_cache(maxsize=16)
def _hashed_secret(password: str) -> str:
    # The base users' passwords are rehashed on every render otherwise: the config would
    # change (new salt) at each reload for nothing.
    return hash_password(password)


@dataclass(frozen=True)
class NatsUser:
    user: str
    password: str  # a bcrypt hash, or a plain password (hashed when rendered)
    publish: tuple[str, ...] | None = None  # None: no restriction
    subscribe: tuple[str, ...] | None = None
    # Let the user answer requests sent to it (needed for device RPC handlers).
    allow_responses: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """``BadUser`` unless nats-server will accept this user in its config."""
        if not valid_subject(self.user, wildcards=False) or "." in self.user:
            raise BadUser(f"NATS user name {self.user!r} is not a valid subject token")
        for kind, subjects in (("publish", self.publish), ("subscribe", self.subscribe)):
            for subject in subjects or ():
                if not valid_subject(subject):
                    raise BadUser(f"user {self.user!r}: {kind} subject {subject!r} is not valid")

    def to_conf(self) -> dict[str, Any]:
        self.check()
        password = self.password if is_hash(self.password) else _hashed_secret(self.password)
        doc: dict[str, Any] = {"user": self.user, "password": password}
        perms: dict[str, Any] = {}
        if self.publish is not None:
            perms["publish"] = {"allow": list(self.publish)}
        if self.subscribe is not None:
            perms["subscribe"] = {"allow": list(self.subscribe)}
        if self.allow_responses:
            perms["allow_responses"] = True
        if perms:
            doc["permissions"] = perms
        doc.update(self.extra)
        return doc


def base_users(sec: Secrets) -> list[NatsUser]:
    return [
        NatsUser(HUB_USER, sec.hub_password),
        NatsUser(
            OPERATOR_USER,
            sec.operator_password,
            # API requests (each carries an API key, which decides the role) and service
            # discovery; replies only under the operators' inbox prefix, and live change
            # notices. No device RPC: that goes through the API (devices.restart, ...), so
            # the API key's role decides it, and only the hub's own login may request it.
            publish=(API_ALL, SERVICE_DISCOVERY_ALL),
            subscribe=(inbox_all(INBOX_OPERATOR), FLEET_CHANGES_ALL),
        ),
        # Enrolling devices: the request (token and the device's own new password travel to
        # the hub only) and replies under their prefix (which carry no secret).
        NatsUser(
            ENROLL_USER,
            sec.enroll_password,
            publish=(ENROLL,),
            subscribe=(inbox_all(INBOX_ENROLL),),
        ),
    ]


RESERVED_USERS = frozenset({HUB_USER, OPERATOR_USER, ENROLL_USER})


def device_user(device_id: str, password: str) -> NatsUser:
    """A device's own NATS user (docs/sync.md "Device NATS user"). From the hub's side,
    ``publish`` is what the device may send in and ``subscribe`` what may be delivered to it:

    - publish its own subjects only (JWT mode: the same lists, as the device signing key's
      template, ``hub.natsjwt.device_permissions``) (reports, heartbeats; another device's are refused);
    - publish under the hub's inbox prefix only: RPC replies go to the requester's inbox
      (``allow_responses`` is not honoured across a leafnode link) and the hub is the only
      requester; a device cannot answer (forge a reply to) an operator or an enrollment;
    - the JetStream API of domain ``hub`` only as a direct get of its own desired key (the
      leaf maps ``$JS.hub.API.>`` to the hub's ``$JS.API.>``): no stream info, no consumers,
      no other key (also without the prefix: a device connected straight to the hub is
      checked after the server mapped ``$JS.hub.API`` to ``$JS.API``); a report publish needs
      no API permission (its PubAck comes to its inbox);
    - receive only its own inbox (the agent uses the prefix ``_INBOX.<id>``), put prompts for
      its own key (``sb.desired.<id>``), and its own RPC subjects.
    """
    if not valid_device_id(device_id):
        raise BadUser(f"device id {device_id!r} is not a valid device id")
    # The direct get twice: with the domain prefix (a leaf device) and without (a device
    # connected straight to the hub: the server maps the prefix away first, then checks).
    # The put prompt: the bucket's republish ($KV.> never crosses a leaf link between
    # JetStream domains); $KV.desired.<id> itself reaches only a direct-mode device.
    publish, subscribe = natsjwt.device_permissions(device_id)
    return NatsUser(device_id, password, publish=publish, subscribe=subscribe)


def render(
    cfg: HubConfig,
    data: DataDir,
    sec: Secrets,
    extra_users: Sequence[NatsUser] = (),
    *,
    trust: dict[str, Any] | None = None,
    node: Node | None = None,
) -> str:
    """The config of ``node`` (default: the first, the only one without a cluster).
    ``trust`` (JWT mode, ``operator_mode``): nats-server in operator mode, no users at all
    in the file (devices, and the shared logins, are JWTs)."""
    every = nodes(cfg)
    node = node or every[0]
    if trust is None:
        users = [*base_users(sec), *extra_users]
        names = [u.user for u in users]
        if len(set(names)) != len(names):
            raise ValueError(
                f"duplicate NATS user names: {sorted(n for n in names if names.count(n) > 1)}"
            )
    leafnodes: dict[str, Any] = {"host": cfg.host, "port": node.leafnode_port, "no_advertise": True}
    if cfg.leaf_tls:
        leafnodes["tls"] = {
            "cert_file": str(data.path(cfg.leaf_tls_cert)),
            "key_file": str(data.path(cfg.leaf_tls_key)),
            "timeout": TLS_TIMEOUT,
        }
    store = data.node_dir(node.index) / "jetstream" if node.clustered else data.jetstream
    conf: dict[str, Any] = {
        "server_name": node.name,
        "host": cfg.host,
        "port": node.client_port,
        "http": f"{cfg.monitor_host}:{node.monitor_port}",
        "max_payload": MAX_PAYLOAD,
        "jetstream": {"store_dir": str(store), "domain": JS_DOMAIN},
        "leafnodes": leafnodes,
    }
    if node.clustered:
        if not sec.route_password:
            raise ValueError("a cluster needs the route password (secrets.json route_password)")
        conf["cluster"] = {
            "name": cfg.cluster_name,
            "host": cfg.host,
            "port": node.cluster_port,
            # Clients and leafs get every node from the hub (enrollment); the addresses
            # nodes would gossip are their bind addresses, wrong behind NAT.
            "no_advertise": True,
            "authorization": {
                "user": ROUTE_USER,
                "password": _hashed_secret(sec.route_password),
                "timeout": TLS_TIMEOUT,
            },
            "routes": [n.route_url(sec.route_password) for n in every if n != node],
        }
        if cfg.route_tls:
            # Both ways verified: a peer must present a certificate from the route CA (the
            # route password alone no longer lets a server join), and the dialling node
            # checks the peer's certificate names the host it dialled.
            conf["cluster"]["tls"] = {
                "cert_file": str(data.route_cert(node.index)),
                "key_file": str(data.route_key(node.index)),
                "ca_file": str(data.route_ca),
                "verify": True,
                "timeout": TLS_TIMEOUT,
            }
    if trust is None:
        account: dict[str, Any] = {"jetstream": "enabled", "users": [u.to_conf() for u in users]}
        # Hub workers: each device's heartbeats to its partition's worker (the JWT mode's
        # account JWT carries the same mapping, hub/natsjwt.py).
        if mappings := natsjwt.heartbeat_mappings(cfg.workers):
            account["mappings"] = mappings
        conf["accounts"] = {ACCOUNT: account}
    else:
        conf.update(trust)
        if node.clustered:
            # Every node its own resolver directory (a `full` resolver per node, synced
            # through the system account).
            conf["resolver"] = {
                **trust["resolver"],
                "dir": str(data.node_dir(node.index) / "accounts"),
            }
    if cfg.client_tls:
        # Top level: the client listener only (leafnodes and the monitor port have their own).
        conf["tls"] = {
            "cert_file": str(data.path(cfg.client_tls_cert)),
            "key_file": str(data.path(cfg.client_tls_key)),
            "timeout": TLS_TIMEOUT,
        }
    return json.dumps(conf, indent=2) + "\n"


def operator_mode(
    data: DataDir, keys: HubKeys, revocations: dict[str, int], partitions: int = 1
) -> dict[str, Any]:
    """The operator-mode part of the config: the operator JWT, the system account, and the
    ``full`` resolver (account JWTs in ``nats/accounts``, updated through the system
    account with no reload), preloaded with both accounts (kept when the stored one is
    newer: a pushed revocation outlives a restart; the owner pushes its own at start, with
    ``partitions``' heartbeat mapping)."""
    return {
        "operator": natsjwt.operator_jwt(keys),
        "system_account": keys.system_public,
        "resolver": {
            "type": "full",
            "dir": str(data.nats_dir / "accounts"),
            "allow_delete": False,
            "interval": "2m",
            "timeout": "5s",
        },
        "resolver_preload": {
            keys.system_public: natsjwt.system_account_jwt(keys),
            keys.account_public: natsjwt.account_jwt(keys, revocations, partitions=partitions),
        },
    }


def write(
    cfg: HubConfig,
    data: DataDir,
    sec: Secrets,
    extra_users: Sequence[NatsUser] = (),
    *,
    trust: dict[str, Any] | None = None,
) -> list[Path]:
    """Every node's config (the deploy copies the other machines' nodes' from here)."""
    private_dir(data.nats_dir)
    out = []
    for node in nodes(cfg):
        path = conf_path(cfg, data, node)
        write_private(path, render(cfg, data, sec, extra_users, trust=trust, node=node))
        out.append(path)
    return out


def write_route_certs(
    cfg: HubConfig, data: DataDir, ca: tuple[bytes, bytes] | None = None
) -> list[Path]:
    """Every node's route certificate (0600, under ``DATA/tls/route/``), each naming the
    host its peers dial (``cluster_hosts``), signed by ``ca`` (the operator's CA) or by the
    data dir's route CA, made here when it has none. The files of every node are written
    here; the deploy copies each machine its own (docs/deploy.md)."""
    from hub import tls as hubtls

    private_dir(data.tls_dir)
    private_dir(data.route_tls_dir)
    hubtls.issue_route_certs(
        data.route_ca,
        data.route_ca_key,
        [(data.route_cert(n.index), data.route_key(n.index), n.name, [n.host]) for n in nodes(cfg)],
        ca=ca,
    )
    return [data.route_ca, *(data.route_cert(n.index) for n in nodes(cfg))]


def reload(pid: int) -> None:
    """Ask a running nats-server to re-read its config (same as ``--signal reload=<pid>``):
    new users take effect, existing connections stay up."""
    os.kill(pid, signal.SIGHUP)


def leaf_url(cfg: HubConfig) -> str:
    """The leafnode URL handed to devices at enrollment: ``tls://`` when the listener
    requires TLS, so the device's leaf server verifies the hub before sending credentials.
    On a cluster, the first node's (an agent from before clusters links only there)."""
    return leaf_urls(cfg)[0]


def leaf_urls(cfg: HubConfig) -> list[str]:
    """Every node's leafnode URL: a device's leaf lists them all and fails over."""
    scheme = "tls" if cfg.leaf_tls else "nats-leaf"
    return [f"{scheme}://{bracket(n.host)}:{n.leafnode_port}" for n in nodes(cfg)]


def client_scheme(cfg: HubConfig) -> str:
    """``tls`` when the client listener requires TLS: a client given a ``tls://`` URL
    refuses a plain connection instead of sending its password over one."""
    return "tls" if cfg.client_tls else "nats"


def hub_url(cfg: HubConfig) -> str:
    """The client URL without credentials (the enrollment reply's ``hub_url``)."""
    return hub_urls(cfg)[0]


def hub_urls(cfg: HubConfig) -> list[str]:
    """Every node's client URL (a direct-mode device or an operator may use any)."""
    return [f"{client_scheme(cfg)}://{bracket(n.host)}:{n.client_port}" for n in nodes(cfg)]


def client_url(cfg: HubConfig, user: str, password: str, host: str | None = None) -> str:
    """A NATS URL with credentials, escaped so any password survives URL parsing (on a
    cluster, the first node's: ``client_urls`` has them all)."""
    return client_urls(cfg, user, password, host)[0]


def client_urls(cfg: HubConfig, user: str, password: str, host: str | None = None) -> list[str]:
    """Every node's URL with credentials (``host`` names one address instead)."""
    creds = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    if host is not None:
        return [f"{client_scheme(cfg)}://{creds}{host}:{cfg.client_port}"]
    return [f"{client_scheme(cfg)}://{creds}{bracket(n.host)}:{n.client_port}" for n in nodes(cfg)]
