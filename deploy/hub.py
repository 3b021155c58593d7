"""pyinfra deploy: a SignalBeam hub on a Debian host.

    pyinfra deploy/inventory.py deploy/hub.py --limit hubs

User ``signalbeam``, venv under /opt/signalbeam with signalbeam-edge, data dir
/var/lib/signalbeam-hub, ``signalbeam-hub init`` once (its output, with the first admin API
key, goes to a root-only file on the hub and nowhere else), hub.toml from the data
variables, the litestream credentials file, and ``signalbeam-hub.service``, enabled and
started. Every variable is described in docs/deploy.md and checked by deploy/validate.py
before anything is planned.
"""

from __future__ import annotations

import sys
from pathlib import Path

# pyinfra runs this file with exec(); make `deploy.*` importable from any working directory.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from pyinfra import host, logger, state  # noqa: E402
from pyinfra.api.operation import OperationMeta  # noqa: E402
from pyinfra.facts.files import File, FindInFile  # noqa: E402
from pyinfra.operations import files, python, server  # noqa: E402

from deploy.cluster import check_node_files, stage_dir  # noqa: E402
from deploy.commands import init_command, route_certs_command  # noqa: E402
from deploy.common import (  # noqa: E402
    group_and_user,
    install_package,
    root_template,
    run_unit,
    settings_from_host,
)
from deploy.render import (  # noqa: E402
    HUB_NODE_UNIT,
    HUB_UNIT,
    HUB_WORKER_UNIT,
    MODE_LINES,
    UNIT_DIR,
    hub_context,
    hub_worker_unit,
    jinja_options,
    settle_modes,
    template_path,
)
from deploy.settings import HUB_ENV_PATH, HubSettings  # noqa: E402
from deploy.validate import validate_hub  # noqa: E402


def _tell_where_the_key_is(hub: HubSettings, host_name: str) -> None:
    logger.warning(
        f"[{host_name}] hub initialised. The first admin API key, the operator URL and the "
        f"devices' enrollment URL were written once to {hub.init_output} on that host "
        "(mode 0600, root). Read it, keep the key in your password store, then delete the "
        "file: it is shown nowhere else."
    )


hub = settings_from_host(validate_hub, inventory_name=host.name)
package_ops = install_package(hub.package)
group_and_user(hub.user, hub.data_dir)

files.directory(
    name=f"Create the hub data dir {hub.data_dir}",
    path=hub.data_dir,
    user=hub.user,
    group=hub.user,
    mode="700",
)
files.directory(
    name="Create /etc/signalbeam",
    path=str(Path(HUB_ENV_PATH).parent),
    user="root",
    group="root",
    mode="755",
)

# TLS on the leafnode and client listeners: the certificates and keys, readable by the hub
# user only. Before init, which checks them and prints tls:// URLs for a TLS client port; in
# the restart set below, so a replaced certificate (rotation) takes effect on this run.
tls_ops: list[OperationMeta] = []
uploads = []
if hub.leaf_tls:
    assert hub.leaf_tls_cert is not None and hub.leaf_tls_key is not None
    uploads += [
        (hub.leaf_tls_cert, hub.remote_leaf_cert, "leaf TLS certificate"),
        (hub.leaf_tls_key, hub.remote_leaf_key, "leaf TLS key"),
    ]
if hub.client_tls:
    assert hub.client_tls_cert is not None and hub.client_tls_key is not None
    uploads += [
        (hub.client_tls_cert, hub.remote_client_cert, "client TLS certificate"),
        (hub.client_tls_key, hub.remote_client_key, "client TLS key"),
    ]
if uploads:
    files.directory(
        name=f"Create {hub.data_dir}/tls",
        path=f"{hub.data_dir}/tls",
        user=hub.user,
        group=hub.user,
        mode="700",
    )
for local, remote, what in uploads:
    tls_ops.append(
        files.put(
            name=f"Upload the {what} to {remote}",
            src=local,
            dest=remote,
            user=hub.user,
            group=hub.user,
            mode="600",
        )
    )


def _hub(hub: HubSettings) -> list[OperationMeta]:
    """The hub itself (one hub, or node 0 of a cluster): init, hub.toml, its units."""
    # The same rule as init's own refusal (and the command's run-time guard): either file
    # means initialised. Checked here too so an initialised hub plans no init step at all.
    initialised = any(
        host.get_fact(File, path=f"{hub.data_dir}/{name}") for name in ("hub.toml", "hub.db")
    )
    if initialised:
        host.noop(f"hub already initialised in {hub.data_dir}")
        lines = host.get_fact(
            FindInFile, path=f"{hub.data_dir}/hub.toml", pattern=MODE_LINES, extended_regex=True
        )
        hub = settle_modes(hub, lines or [])
    else:
        hub = settle_modes(hub, None)
        init = server.shell(
            name=f"Initialise the hub (once; admin key into {hub.init_output})",
            commands=[init_command(hub)],
        )
        python.call(
            name="Say where the admin key is",
            function=_tell_where_the_key_is,
            hub=hub,
            host_name=host.name,
            _if=init.did_change,
        )
    changed: list[OperationMeta] = []
    if (
        initialised
        and hub.cluster_hosts
        and not host.get_fact(File, path=f"{hub.remote_route_dir}/ca.pem")
    ):
        # A cluster initialised before route TLS: its CA and node certificates, once.
        changed.append(
            server.shell(
                name="Make the cluster's route CA and node certificates (once)",
                commands=[route_certs_command(hub)],
            )
        )

    context = hub_context(hub)
    toml = files.template(
        name="Write hub.toml",
        src=template_path("hub.toml.j2"),
        dest=f"{hub.data_dir}/hub.toml",
        user=hub.user,
        group=hub.user,
        mode="600",
        jinja_env_kwargs=jinja_options(),
        **context,
    )
    if hub.replica_env:
        env = root_template(
            f"Write {HUB_ENV_PATH} (replica credentials)",
            "hub.env.j2",
            HUB_ENV_PATH,
            mode="600",
            **context,
        )
    else:
        env = files.file(
            name=f"No replica credentials: remove {HUB_ENV_PATH}", path=HUB_ENV_PATH, present=False
        )
    unit = root_template(
        f"Write {HUB_UNIT}",
        f"{HUB_UNIT}.j2",
        f"{UNIT_DIR}/{HUB_UNIT}",
        **context,
    )
    changed += [*package_ops, *tls_ops, toml, env]
    run_unit(HUB_UNIT, unit, changed, start=hub.start_services)
    if hub.workers > 1:
        worker_unit = root_template(
            f"Write {HUB_WORKER_UNIT}",
            f"{HUB_WORKER_UNIT}.j2",
            f"{UNIT_DIR}/{HUB_WORKER_UNIT}",
            **context,
        )
        for index in range(hub.workers):
            run_unit(
                hub_worker_unit(index),
                worker_unit,
                [*changed, unit],
                start=hub.start_services,
            )
    return changed


if hub.runs_hub:
    _hub(hub)

if hub.cluster_hosts:
    stage = stage_dir(hub)
    if hub.runs_hub:
        # Node 0 made every node's config and route certificate (init; the hub rewrites the
        # configs at each start): fetch what the other machines need to the operator's
        # machine. A file that did not change is not downloaded again.
        wanted = {
            name: remote
            for index in range(1, len(hub.cluster_hosts))
            for name, remote in hub.node_files(index)
        }
        for name, remote in wanted.items():
            files.get(
                name=f"Fetch {remote} for the other nodes", src=remote, dest=str(stage / name)
            )
    # On every node, after node 0's fetches (one operation shared by all the cluster's hosts
    # orders them: pyinfra runs each operation on every host before the next).
    files.directory(
        name=f"Create {hub.data_dir}/nats",
        path=f"{hub.data_dir}/nats",
        user=hub.user,
        group=hub.user,
        mode="700",
    )

if not hub.runs_hub:
    # Node 1 and up: nats-server alone, with the files node 0's deploy fetched.
    check_node_files(hub, state, host)
    for path in (
        f"{hub.data_dir}/nats/node{hub.cluster_node}",
        f"{hub.data_dir}/tls",
        hub.remote_route_dir,
    ):
        files.directory(name=f"Create {path}", path=path, user=hub.user, group=hub.user, mode="700")
    node_ops = [
        files.put(
            name=f"Upload {remote}",
            src=str(stage / name),
            dest=remote,
            user=hub.user,
            group=hub.user,
            mode="600",
            assume_exists=True,  # fetched from node 0 earlier in this run
        )
        for name, remote in hub.node_files(hub.cluster_node)
    ]
    node_unit = root_template(
        f"Write {HUB_NODE_UNIT}",
        f"{HUB_NODE_UNIT}.j2",
        f"{UNIT_DIR}/{HUB_NODE_UNIT}",
        **hub_context(hub),
    )
    run_unit(
        HUB_NODE_UNIT, node_unit, [*package_ops, *tls_ops, *node_ops], start=hub.start_services
    )
