"""The other nodes of a hub NATS cluster (docs/deploy.md "A hub NATS cluster"): where node
0's deploy leaves the files they need on the operator's machine, and the plan-time check
that they will be there.

Node 0 (the hub) makes every node's config and route certificate (``signalbeam-hub
init``; the hub rewrites the configs at each start). pyinfra moves files between hosts only
through the machine it runs on, so node 0's deploy fetches them into ``cluster_files``
(0700: the configs hold the route password, the key files are the nodes' TLS keys), and
each other node's deploy uploads its own from there, in the same run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pyinfra.api.exceptions import PyinfraError

from deploy.settings import HubSettings


def stage_dir(hub: HubSettings) -> Path:
    """``cluster_files``, made owner-only (also when it existed with a wider mode)."""
    path = Path(hub.cluster_files)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _node_index(data: Any) -> int:
    value = data.get("signalbeam_hub_cluster_node")
    try:
        return int(value) if value is not None else 0
    except (TypeError, ValueError):
        return -1


def check_node_files(hub: HubSettings, state: Any, host: Any) -> None:
    """Plan-time: node ``cluster_node``'s files are on the operator's machine already, or
    node 0 is deployed in this run (and fetches them first); otherwise one clear error
    rather than pyinfra's missing-file failure halfway through."""
    stage = Path(hub.cluster_files)
    if all((stage / name).is_file() for name, _ in hub.node_files(hub.cluster_node)):
        return
    hubs_here = [h for h in state.activated_hosts if _node_index(h.data) == 0]
    if hubs_here:
        return
    raise PyinfraError(
        f"[{host.name}] bad data variable signalbeam_hub_cluster_node: {host.name} is node {hub.cluster_node}: its config and certificates come from node 0"
        f" (the hub), which is not in this run and left none in {stage}; deploy the cluster's"
        " hosts together (e.g. --limit hubs)",
    )
