"""``signalbeam-hub``: init a data directory, run the hub, restore the DB from its replica."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hub import app, litestream, natsconf, natsjwt
from hub import tls as hubtls
from hub.children import find_binary
from hub.config import (
    DataDir,
    HubConfig,
    Secrets,
    check_cluster,
    check_tls,
    load,
    parse_toml,
    save,
)
from hub.errors import ConfigError, HubError
from hub.store import Store
from hub.vault import Vault
from sbutil.cli import Parser, add_version
from sbutil.logsetup import add_logging_args, setup_logging
from sbutil.private import restrict_umask

LEAF_CERT = "leaf-cert.pem"
LEAF_KEY = "leaf-key.pem"
# --tls-self-signed: one pair for both listeners, so devices pin one certificate.
HUB_CERT = "hub-cert.pem"
HUB_KEY = "hub-key.pem"


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="hub data directory")
    p.add_argument("--client-port", type=int, help="NATS client port (default 4222)")
    p.add_argument("--leafnode-port", type=int, help="NATS leafnode port (default 7422)")
    p.add_argument("--monitor-port", type=int, help="NATS monitor port (default 8222)")
    p.add_argument("--http-port", type=int, help="health/metrics port (default 8080)")
    p.add_argument("--host", help="bind address of the NATS client and leafnode listeners")
    p.add_argument("--http-host", help="bind address of the health/metrics port")
    p.add_argument("--public-host", help="host name printed in URLs for operators and devices")
    p.add_argument(
        "--offline-grace",
        type=int,
        help="seconds without a heartbeat before a device is offline (default 90)",
    )
    p.add_argument(
        "--leaf-tls-cert",
        help="PEM certificate (full chain) for TLS on the leafnode listener (devices' link)",
    )
    p.add_argument("--leaf-tls-key", help="PEM private key of --leaf-tls-cert")
    p.add_argument(
        "--client-tls-cert",
        help="PEM certificate (full chain) for TLS on the client listener (operators, "
        "enrollment); may be the same file as --leaf-tls-cert",
    )
    p.add_argument("--client-tls-key", help="PEM private key of --client-tls-cert")
    p.add_argument(
        "--device-jwt-ttl",
        type=int,
        help="JWT mode: seconds a device's JWT is good for (default 86400; renewed at 2/3)",
    )
    p.add_argument("--replica-url", help="litestream replica URL (default file://DATA/replica)")
    p.add_argument(
        "--no-litestream",
        dest="litestream",
        action="store_const",
        const=False,
        default=None,
        help="do not replicate the DB",
    )
    p.add_argument(
        "--allow-unsigned-bundles",
        dest="require_signed_bundles",
        action="store_const",
        const=False,
        default=None,
        help="devices enrolled from now on run unsigned bundles too (opt out of signed "
        "bundles; see docs/security.md); the default requires a signature by a trusted key",
    )


def _add_route_ca_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--route-ca-cert",
        help="cluster: PEM CA certificate to sign the nodes' route certificates with (default:"
        " a CA made in DATA/tls/route/, kept there for renewals)",
    )
    p.add_argument("--route-ca-key", help="PEM private key of --route-ca-cert (read, never copied)")


def _route_ca(args: argparse.Namespace) -> tuple[bytes, bytes] | None:
    cert, key = getattr(args, "route_ca_cert", None), getattr(args, "route_ca_key", None)
    if not cert and not key:
        return None
    if not cert or not key:
        raise ConfigError("--route-ca-cert and --route-ca-key go together")
    try:
        return hubtls.load_ca(Path(cert), Path(key))
    except hubtls.CertProblem as exc:
        raise ConfigError(f"--route-ca-{'key' if exc.field == 'key' else 'cert'}: {exc}") from None


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "client_port",
        "leafnode_port",
        "monitor_port",
        "http_port",
        "host",
        "http_host",
        "public_host",
        "replica_url",
        "litestream",
        "offline_grace",
        "leaf_tls_cert",
        "leaf_tls_key",
        "client_tls_cert",
        "client_tls_key",
        "require_signed_bundles",
        "device_jwt_ttl",
    )
    return {n: getattr(args, n, None) for n in names}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="signalbeam-hub", description=__doc__)
    add_version(parser)
    add_logging_args(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p_init = sub.add_parser("init", help="create a data directory, config, DB and first admin key")
    _add_config_flags(p_init)
    p_init.add_argument("--json", action="store_true", help="print the result as JSON")
    p_init.add_argument(
        "--nats-auth",
        choices=("jwt", "password"),
        default="jwt",
        help="how devices log in to NATS: jwt (default: each device its own nkey and a JWT"
        " the hub signs; nats-server in operator mode, no reload per device) or password"
        " (one password user per device in the generated config, as before issue 16)",
    )
    p_init.add_argument(
        "--cluster",
        action="store_true",
        help="a 3-node nats-server cluster on this machine (loopback or --public-host; each"
        " node on the ports plus its index), every node run by this hub (docs/hub.md)",
    )
    p_init.add_argument(
        "--cluster-hosts",
        help="comma-separated hosts of a nats-server cluster, one per node (3 or more;"
        " nodes on their own hosts keep the configured ports)",
    )
    p_init.add_argument(
        "--cluster-local",
        help="comma-separated indexes of the nodes this hub runs (default: all); the deploy"
        " runs the others from their rendered configs (nats/node<i>.conf)",
    )
    p_init.add_argument("--cluster-port", type=int, help="cluster route port (default 6222)")
    _add_route_ca_flags(p_init)
    self_signed = p_init.add_mutually_exclusive_group()
    self_signed.add_argument(
        "--tls-self-signed",
        action="store_true",
        help="generate a key and a self-signed certificate for --public-host and require TLS "
        "on both the client and the leafnode listener; devices pin the certificate as "
        "hub.ca_file (also for enrollment), operators give it as their CA file",
    )
    self_signed.add_argument(
        "--leaf-tls-self-signed",
        action="store_true",
        help="as --tls-self-signed, for the leafnode listener only (the client port stays plain)",
    )
    p_run = sub.add_parser("run", help="run the hub (nats-server, API, litestream, HTTP)")
    _add_config_flags(p_run)
    p_run.add_argument(
        "--worker",
        metavar="I[/M]",
        help="run as hub worker I of M (M from --workers or `workers` in hub.toml): report "
        "ingest for partition I, the control plane while this worker holds the lease; the "
        'nats-server is `signalbeam-hub nats`\'s (docs/architecture.md "Scale path")',
    )
    p_run.add_argument("--workers", type=int, help="number of hub workers (default: hub.toml)")
    p_nats = sub.add_parser(
        "nats", help="run only the data dir's nats-server, for hub workers (`run --worker`)"
    )
    _add_config_flags(p_nats)
    p_nats.add_argument(
        "--workers",
        type=int,
        help="number of hub workers (default: hub.toml): the heartbeat mapping's partitions",
    )
    p_certs = sub.add_parser(
        "route-certs",
        help="issue new route certificates for every cluster node (renewal, or TLS routes for "
        "a cluster made before them); restart each node afterwards (docs/hub.md)",
    )
    p_certs.add_argument("--data", required=True)
    _add_route_ca_flags(p_certs)
    p_restore = sub.add_parser("restore", help="restore the DB from its litestream replica")
    p_restore.add_argument("--data", required=True)
    p_restore.add_argument("--replica", help="replica URL (default: the configured one)")
    p_restore.add_argument(
        "--force", action="store_true", help="move an existing DB aside instead of refusing"
    )
    p_key = sub.add_parser(
        "admin-key", help="create a new admin API key directly in the DB (lost-key recovery)"
    )
    p_key.add_argument("--data", required=True)
    p_key.add_argument("--name", default="recovered-admin")
    return parser


def cmd_init(args: argparse.Namespace) -> int:
    data = DataDir(args.data)
    if data.config.exists() or data.db.exists():
        raise ConfigError(f"{data.root} is already initialised; nothing changed")
    cfg = _self_signed(args, data, HubConfig().with_overrides(**_overrides(args)))
    cfg = _cluster(args, cfg.with_overrides(nats_auth=args.nats_auth))
    if args.require_signed_bundles is None:
        cfg = cfg.with_overrides(require_signed_bundles=True)  # new hubs require signatures
    check_tls(cfg, data, "init")
    trust = None
    if cfg.jwt_auth:
        # The operator, system account, account and device signing keys (0600): the shared
        # logins become bearer JWTs signed by the account (docs/security.md).
        keys = natsjwt.ensure_keys(data)
        sec = Secrets(
            **natsjwt.shared_logins(keys), route_password=Secrets.generate().route_password
        )
        trust = natsconf.operator_mode(data, keys, {}, cfg.workers)
    else:
        sec = Secrets.generate()
    route_ca = _route_ca(args)
    if route_ca is not None and not cfg.clustered:
        raise ConfigError("--route-ca-cert/--route-ca-key need --cluster or --cluster-hosts")
    if cfg.clustered:
        # Every new cluster's routes are TLS, verified both ways (docs/hub.md).
        natsconf.write_route_certs(cfg, data, route_ca)
        cfg = cfg.with_overrides(route_tls=True)
    save(data, cfg, sec)
    natsconf.write(cfg, data, sec, trust=trust)
    if cfg.litestream:
        litestream.write(cfg, data)
    Vault.load_or_create(data.vault_key)  # the secrets' key (hub/vault.py), 0600
    store = Store.open(data.db)
    try:
        record, key = store.create_api_key("admin", "admin")
    finally:
        store.close()
    out = {
        "data": str(data.root),
        "admin_key": key,
        "admin_key_id": record["id"],
        "operator_url": natsconf.client_url(cfg, natsconf.OPERATOR_USER, sec.operator_password),
        "enroll_url": natsconf.client_url(cfg, natsconf.ENROLL_USER, sec.enroll_password),
        "leafnode_port": cfg.leafnode_port,
        "leaf_url": natsconf.leaf_url(cfg),
        "leaf_tls_cert": str(data.path(cfg.leaf_tls_cert)) if cfg.leaf_tls else None,
        "leaf_tls_fingerprint": (
            hubtls.fingerprint(data.path(cfg.leaf_tls_cert)) if cfg.leaf_tls else None
        ),
        "client_tls_cert": str(data.path(cfg.client_tls_cert)) if cfg.client_tls else None,
        "client_tls_fingerprint": (
            hubtls.fingerprint(data.path(cfg.client_tls_cert)) if cfg.client_tls else None
        ),
        "http_port": cfg.http_port,
        "nats_auth": cfg.nats_auth,
    }
    if cfg.clustered:
        out["cluster"] = {
            "leaf_urls": natsconf.leaf_urls(cfg),
            "operator_urls": natsconf.client_urls(
                cfg, natsconf.OPERATOR_USER, sec.operator_password
            ),
            "enroll_urls": natsconf.client_urls(cfg, natsconf.ENROLL_USER, sec.enroll_password),
            "route_ca": str(data.route_ca),
            "nodes": [
                {
                    "index": n.index,
                    "host": n.host,
                    "client_port": n.client_port,
                    "leafnode_port": n.leafnode_port,
                    "cluster_port": n.cluster_port,
                    "monitor_port": n.monitor_port,
                    "config": str(natsconf.conf_path(cfg, data, n)),
                    "route_cert": str(data.route_cert(n.index)),
                    "route_key": str(data.route_key(n.index)),
                    "local": n in natsconf.local_nodes(cfg),
                }
                for n in natsconf.nodes(cfg)
            ],
        }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"SignalBeam hub initialised in {data.root}\n")
    print("Admin API key (shown only now; store it safely):")
    print(f"  {key}\n")
    print("Operators (CLI/TUI) connect with:")
    # A cluster: every node's URL, so the CLI/TUI fail over between them (docs/cli.md).
    operator_urls = out["cluster"]["operator_urls"] if cfg.clustered else [out["operator_url"]]
    print(f"  export SIGNALBEAM_HUB='{','.join(operator_urls)}'")
    print(f"  export SIGNALBEAM_API_KEY='{key}'\n")
    print("Devices enroll through (bootstrap user, may only request sb.hub.enroll):")
    print(f"  {out['enroll_url']}\n")
    if cfg.client_tls:
        print("The client port requires TLS (operators and enrollment). Certificate:")
        print(f"  {out['client_tls_cert']}")
        print(f"  SHA-256 {out['client_tls_fingerprint']}")
        if args.tls_self_signed:
            print(
                "Give it to operators as their CA file and to devices as "
                "`enroll --ca-file` / hub.ca_file (docs/deploy.md)."
            )
        print()
    if cfg.leaf_tls:
        print(f"Device leaf links require TLS ({out['leaf_url']}). Certificate:")
        print(f"  {out['leaf_tls_cert']}")
        print(f"  SHA-256 {out['leaf_tls_fingerprint']}")
        if args.leaf_tls_self_signed or args.tls_self_signed:
            print("Copy it to every device and set hub.ca_file to it (docs/deploy.md).")
        print()
    if cfg.clustered:
        print("NATS cluster nodes (devices are handed every leaf URL at enrollment):")
        for node in out["cluster"]["nodes"]:
            where = "run by this hub" if node["local"] else "another machine: nats-server -c"
            print(f"  {node['index']}: {node['host']}:{node['client_port']} ({where}"
                  f" {node['config']})")  # fmt: skip
        print()
    print(f"Start the hub:  signalbeam-hub run --data {data.root}")
    return 0


def _cluster(args: argparse.Namespace, cfg: HubConfig) -> HubConfig:
    """``--cluster``/``--cluster-hosts``/``--cluster-local`` into the config (checked by
    ``hub.config.check_cluster``)."""
    if args.cluster_hosts:
        hosts = tuple(h.strip() for h in args.cluster_hosts.split(",") if h.strip())
    elif args.cluster:
        hosts = (cfg.public_host,) * 3
    else:
        if args.cluster_local:
            raise ConfigError("--cluster-local needs --cluster or --cluster-hosts")
        return cfg
    try:
        local = (
            tuple(int(i) for i in args.cluster_local.split(","))
            if args.cluster_local
            else tuple(range(len(hosts)))
        )
    except ValueError:
        raise ConfigError("--cluster-local: comma-separated node indexes, e.g. 0") from None
    cfg = cfg.with_overrides(
        cluster_hosts=hosts, cluster_local=local, cluster_port=args.cluster_port
    )
    check_cluster(cfg, "init")
    return cfg


def _self_signed(args: argparse.Namespace, data: DataDir, cfg: HubConfig) -> HubConfig:
    """Generate the self-signed pair ``--tls-self-signed``/``--leaf-tls-self-signed`` ask
    for and point the listeners' settings at it."""
    listeners: tuple[str, ...]
    if args.tls_self_signed:
        listeners, names = ("leaf", "client"), (HUB_CERT, HUB_KEY)
        flag = "--tls-self-signed"
    elif args.leaf_tls_self_signed:
        listeners, names = ("leaf",), (LEAF_CERT, LEAF_KEY)
        flag = "--leaf-tls-self-signed"
    else:
        return cfg
    for listener in listeners:
        if getattr(cfg, f"{listener}_tls"):
            raise ConfigError(
                f"{flag} and --{listener}-tls-cert/--{listener}-tls-key exclude each other"
            )
    cert_path, key_path = data.tls_dir / names[0], data.tls_dir / names[1]
    hubtls.self_signed(cert_path, key_path, cfg.public_host)
    # Stored relative to the data dir, so a moved or restored data dir keeps working.
    cert, key = str(cert_path.relative_to(data.root)), str(key_path.relative_to(data.root))
    for listener in listeners:
        cfg = cfg.with_overrides(**{f"{listener}_tls_cert": cert, f"{listener}_tls_key": key})
    return cfg


def parse_worker(value: str | None, workers: int) -> tuple[int | None, int]:
    """``--worker I`` or ``I/M`` against the configured count: (index, count)."""
    if value is None:
        if workers > 1:
            raise ConfigError(
                f"workers = {workers}: start each hub process with `run --worker I` "
                f"(I = 0..{workers - 1}) beside one `signalbeam-hub nats`",
                field="workers",
            )
        return None, workers
    index_text, _, count_text = value.partition("/")
    try:
        index = int(index_text)
        count = int(count_text) if count_text else workers
    except ValueError:
        raise ConfigError(f"--worker {value!r}: expected I or I/M", field="worker") from None
    if not 2 <= count <= 64 or not 0 <= index < count:
        raise ConfigError(
            f"--worker {value!r}: needs 2-64 workers and 0 <= I < M (workers = {count})",
            field="worker",
        )
    return index, count


def cmd_run(args: argparse.Namespace) -> int:
    data = DataDir(args.data)
    cfg, sec = load(data)
    cfg = cfg.with_overrides(**_overrides(args), workers=getattr(args, "workers", None))
    check_tls(cfg, data, "run")
    worker, count = parse_worker(getattr(args, "worker", None), cfg.workers)
    cfg = cfg.with_overrides(workers=count)
    if worker is not None and args.http_port is None:
        # One hub.toml for every worker: worker I's health/metrics port is http_port + I
        # (`signalbeam-hub nats` serves none, so worker 0 takes http_port itself).
        cfg = cfg.with_overrides(http_port=cfg.http_port + worker)
    asyncio.run(app.run(data, cfg, sec, worker=worker))
    return 0


def cmd_nats(args: argparse.Namespace) -> int:
    data = DataDir(args.data)
    cfg, sec = load(data)
    cfg = cfg.with_overrides(**_overrides(args), workers=getattr(args, "workers", None))
    check_tls(cfg, data, "nats")
    asyncio.run(app.run(data, cfg, sec, nats_only=True))
    return 0


def _hub_running(data: DataDir) -> int | None:
    try:
        pid = int(data.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def cmd_route_certs(args: argparse.Namespace) -> int:
    """New route certificates for every node from the same CA (the data dir's, or the one
    given), and ``route_tls`` on: renewal, or TLS routes for a cluster made before them.
    The nodes pick them up when restarted (one at a time: the cluster keeps its quorum).
    The node configs are not written here: the hub rewrites them at its start, with the
    device users and revocations only it has."""
    data = DataDir(args.data)
    try:
        cfg, sec = load(data)
    except ConfigError as exc:
        if exc.field != "route_tls":
            raise
        # Missing, expired or mismatched route files are what this command replaces.
        cfg = parse_toml(data.config.read_text(encoding="utf-8"), str(data.config))
        sec = Secrets(**json.loads(data.secrets.read_text(encoding="utf-8")))
    if not cfg.clustered:
        raise ConfigError("route-certs: this hub is not a cluster (cluster_hosts is empty)")
    try:
        written = natsconf.write_route_certs(cfg, data, _route_ca(args))
    except FileNotFoundError as exc:
        raise ConfigError(f"route-certs: {exc} (--route-ca-cert/--route-ca-key)") from None
    if not cfg.route_tls:
        save(data, cfg.with_overrides(route_tls=True), sec)
    for path in written:
        print(path)
    print(
        "Restart the hub (it rewrites every node's config), copy the other machines' nodes"
        " their certificate, key, CA and config (the deploy does: docs/deploy.md), and"
        " restart those nodes one at a time."
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    data = DataDir(args.data)
    cfg, _ = load(data)
    pid = _hub_running(data)
    if pid is not None:
        raise ConfigError(f"the hub is running (pid {pid}); stop it before restoring")
    if data.db.exists():
        if not args.force:
            raise ConfigError(f"{data.db} exists; use --force to move it aside and restore")
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        for suffix in ("", "-wal", "-shm"):
            src = data.db.with_name(data.db.name + suffix)
            if src.exists():
                src.rename(src.with_name(f"{src.name}.before-restore-{stamp}"))
    url = args.replica or data.replica_url(cfg)
    argv = litestream.restore_argv(find_binary("litestream", cfg.litestream_bin), url, data.db)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise ConfigError(
            f"litestream restore from {url} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
    print(f"restored {data.db} from {url}")
    return 0


def cmd_admin_key(args: argparse.Namespace) -> int:
    """Whoever can write the data dir owns the hub anyway; this is the way back in when every
    admin key is lost. The hub must be stopped: it is the DB's one writer."""
    data = DataDir(args.data)
    load(data)
    pid = _hub_running(data)
    if pid is not None:
        raise ConfigError(
            f"the hub is running (pid {pid}); stop it, or use `signalbeam api-key create`"
        )
    if not data.db.exists():
        raise ConfigError(f"{data.db} not found; run `signalbeam-hub init` or `restore` first")
    store = Store.open(data.db)
    try:
        record, key = store.create_api_key(args.name, "admin")
    finally:
        store.close()
    print(f"new admin API key {record['id']} ({record['name']}), shown only now:\n  {key}")
    return 0


def main(argv: list[str] | None = None) -> int:
    # Everything the hub and its children write is owner-only: the DB and the nats config
    # hold credentials (sbutil/private.py).
    restrict_umask()
    args = build_parser().parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    commands = {
        "init": cmd_init,
        "run": cmd_run,
        "nats": cmd_nats,
        "route-certs": cmd_route_certs,
        "restore": cmd_restore,
        "admin-key": cmd_admin_key,
    }
    try:
        return commands[args.command](args)
    except HubError as exc:
        print(f"signalbeam-hub: {exc.message}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.DatabaseError) as exc:
        # A port in use, a missing binary, an unreadable or corrupt DB: one clear line.
        print(f"signalbeam-hub: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
