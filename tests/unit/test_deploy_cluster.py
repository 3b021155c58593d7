"""The hub deploy's cluster nodes 1 and up (docs/deploy.md "A hub NATS cluster"): the
variables, the node unit, the files each node gets, node 0's hub.toml with route TLS. The
deploy itself runs in tests/integration/test_deploy_cluster_chroot.py."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from deploy.cluster import check_node_files, stage_dir
from deploy.commands import route_certs_command
from deploy.fields import DeployDataError
from deploy.render import HUB_NODE_UNIT, hub_context, render
from hub.config import parse_toml
from tests.unit.test_deploy_render import VENV, _hub, _unit, _verify

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_node_variable_and_files(tmp_path: Path) -> None:
    node0 = _hub(signalbeam_hub_cluster_hosts=HOSTS)
    assert node0.cluster_node == 0 and node0.runs_hub
    assert node0.cluster_files.endswith("/.local/state/signalbeam/cluster-10.0.0.1")
    node2 = _hub(
        signalbeam_hub_cluster_hosts=HOSTS,
        signalbeam_hub_cluster_node="2",
        signalbeam_hub_cluster_files=str(tmp_path / "stage"),
    )
    assert node2.cluster_node == 2 and not node2.runs_hub
    assert node2.cluster_files == str(tmp_path / "stage")
    data = "/var/lib/signalbeam-hub"
    assert node2.node_files(2) == [
        ("node2.conf", f"{data}/nats/node2.conf"),
        ("route-ca.pem", f"{data}/tls/route/ca.pem"),
        ("node2-cert.pem", f"{data}/tls/route/node2-cert.pem"),
        ("node2-key.pem", f"{data}/tls/route/node2-key.pem"),
    ]
    assert not any("ca-key" in remote for _, remote in node2.node_files(2))
    assert _hub().cluster_files == ""


@pytest.mark.parametrize(
    "data",
    [
        {"signalbeam_hub_cluster_node": 1},  # no cluster
        {"signalbeam_hub_cluster_hosts": HOSTS, "signalbeam_hub_cluster_node": 3},
        {"signalbeam_hub_cluster_hosts": HOSTS, "signalbeam_hub_cluster_node": "x"},
        {
            "signalbeam_hub_cluster_hosts": HOSTS,
            "signalbeam_hub_cluster_node": 1,
            "signalbeam_hub_workers": 2,
        },
        {"signalbeam_hub_cluster_hosts": HOSTS, "signalbeam_hub_cluster_files": "relative"},
    ],
)
def test_bad_cluster_node_data_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(DeployDataError) as e:
        _hub(**data)
    assert e.value.var.startswith("signalbeam_hub_"), e.value.var


def test_node_unit_runs_nats_server_on_its_config(tmp_path: Path) -> None:
    hub = _hub(signalbeam_hub_cluster_hosts=HOSTS, signalbeam_hub_cluster_node=1)
    text = render(f"{HUB_NODE_UNIT}.j2", **hub_context(hub))
    _verify(tmp_path, HUB_NODE_UNIT, text)
    service = _unit(text)["Service"]
    assert service["ExecStart"] == (
        f"{VENV}/bin/nats-server -c /var/lib/signalbeam-hub/nats/node1.conf"
    )
    assert service["User"] == "signalbeam" and service["Restart"] == "always"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/signalbeam-hub"
    assert service["CapabilityBoundingSet"] == ""


def test_node_0_hub_toml_keeps_route_tls() -> None:
    hub = _hub(signalbeam_hub_cluster_hosts=HOSTS)
    text = render("hub.toml.j2", **hub_context(hub))
    assert parse_toml(text).route_tls
    assert not parse_toml(render("hub.toml.j2", **hub_context(_hub()))).route_tls


def test_route_certs_command_runs_once_as_the_hub_user() -> None:
    cmd = route_certs_command(_hub(signalbeam_hub_cluster_hosts=HOSTS)).get_raw_value()
    assert cmd.startswith("test -e /var/lib/signalbeam-hub/tls/route/ca.pem || runuser -u")
    assert "signalbeam-hub route-certs --data /var/lib/signalbeam-hub" in cmd


class _Host:
    def __init__(self, name: str, node: int | None) -> None:
        self.name = name
        self.data = {} if node is None else {"signalbeam_hub_cluster_node": node}


class _State:
    def __init__(self, *hosts: _Host) -> None:
        self.activated_hosts = set(hosts)


def test_a_node_without_its_files_or_its_hub_is_refused(tmp_path: Path) -> None:
    from pyinfra.api.exceptions import PyinfraError

    hub = _hub(
        signalbeam_hub_cluster_hosts=HOSTS,
        signalbeam_hub_cluster_node=1,
        signalbeam_hub_cluster_files=str(tmp_path / "stage"),
    )
    node1, node0 = _Host("b", 1), _Host("a", None)
    check_node_files(hub, _State(node0, node1), node1)  # node 0 fetches them first
    with pytest.raises(PyinfraError, match="signalbeam_hub_cluster_node"):
        check_node_files(hub, _State(node1), node1)
    stage = stage_dir(hub)
    assert stat.S_IMODE(stage.stat().st_mode) == 0o700
    for name, _ in hub.node_files(1):
        (stage / name).write_text("x")
    check_node_files(hub, _State(node1), node1)  # fetched by an earlier run
