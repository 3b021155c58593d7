"""The hub deploy of a hub NATS cluster's nodes, planned with ``pyinfra --dry`` on this
machine (as test_deploy_dry.py, whose stand-in systemctl it uses): node 0 initialises and
fetches the other nodes' files; node 1 plans its directories, uploads and the node unit,
and no init; node 1 without its files or its hub stops with one line. The deploy of all
three for real: test_deploy_cluster_chroot.py."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness.deploy_dry import PYINFRA, ROOT, dry_env, index, planned

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return dry_env(tmp_path)


def plan(
    env: dict[str, str], tmp_path: Path, data: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "inventory.py"
    host = {
        "signalbeam_hub_public_host": "hub.example.com",
        "signalbeam_hub_cluster_hosts": HOSTS,
        "signalbeam_hub_cluster_files": str(tmp_path / "stage"),
        **data,
    }
    inventory.write_text(f"hubs = [('@local', {host!r})]\n")
    return subprocess.run(
        [PYINFRA, str(inventory), str(ROOT / "deploy" / "hub.py"), "--dry"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


def test_node_0_initialises_then_fetches_the_other_nodes_files(
    env: dict[str, str], tmp_path: Path
) -> None:
    names = planned(plan(env, tmp_path, {}))
    order = [
        "Initialise the hub",
        "Write hub.toml",
        "Write signalbeam-hub.service",
        "Fetch /var/lib/signalbeam-hub/nats/node1.conf",
        "Fetch /var/lib/signalbeam-hub/tls/route/node2-key.pem",
        "Create /var/lib/signalbeam-hub/nats",
    ]
    positions = [index(names, op) for op in order]
    assert positions == sorted(positions), names
    assert not any("ca-key" in n or "node0-key" in n for n in names), names
    assert not any("signalbeam-hub-node" in n for n in names), names


def test_node_1_uploads_its_files_and_runs_nats_server(env: dict[str, str], tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    for name in ("node1.conf", "route-ca.pem", "node1-cert.pem", "node1-key.pem"):
        (stage / name).write_text(name)
    names = planned(plan(env, tmp_path, {"signalbeam_hub_cluster_node": 1}))
    order = [
        "Create the hub data dir /var/lib/signalbeam-hub",
        "Create /var/lib/signalbeam-hub/nats/node1",
        "Create /var/lib/signalbeam-hub/tls/route",
        "Upload /var/lib/signalbeam-hub/nats/node1.conf",
        "Upload /var/lib/signalbeam-hub/tls/route/ca.pem",
        "Upload /var/lib/signalbeam-hub/tls/route/node1-key.pem",
        "Write signalbeam-hub-node.service",
        "Enable and start signalbeam-hub-node.service",
    ]
    positions = [index(names, op) for op in order]
    assert positions == sorted(positions), names
    for hub_only in (
        "Initialise the hub",
        "Write hub.toml",
        "Write signalbeam-hub.service",
        "Fetch",
    ):
        assert not any(hub_only in n for n in names), (hub_only, names)


def test_node_1_without_files_or_hub_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    res = plan(env, tmp_path, {"signalbeam_hub_cluster_node": 1})
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "bad data variable signalbeam_hub_cluster_node" in out, out
    assert "Traceback" not in out, out
