"""The hub deploy lays out a 3-node hub NATS cluster on three fresh Debian 12 hosts, for real
(docs/deploy.md "A hub NATS cluster"): copies of the debootstrap root reached through
pyinfra's ``@chroot`` connector, one inventory with the three hosts, one `pyinfra` run
(tests/harness/deploy_chroot.py has the roots, the wheel and the wheelhouse).

- node 0 is the hub (init with `--cluster-hosts`, hub.toml, signalbeam-hub.service);
- nodes 1 and 2 get exactly their own files from node 0 through the operator's machine
  (their config, their route certificate and key, the route CA: never the CA key or another
  node's key), 0600 and owned by the hub user, and `signalbeam-hub-node.service` running
  `nats-server -c` on their config, enabled (systemd does not run in a chroot);
- each node's nats-server, as the hub user inside its own root, accepts its config (the
  route TLS files load: `nats-server -t`);
- a second run changes nothing on any host; a node deployed without node 0 in the run and
  without the fetched files stops with one line naming the variable.

The cluster these files make is started and checked (routes over TLS, a rogue refused) in
tests/integration/test_hub_cluster_tls.py: here the three roots share one network, and the
nodes of a cluster on three machines all listen on the same ports.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hub.config import parse_toml
from tests.harness.deploy_chroot import (
    PYINFRA,
    ROOT,
    cached_wheelhouse,
    chroot_marks,
    copy_rootfs,
    in_root,
    passwd_entry,
    project_wheel,
    pyinfra_env,
    unit_settings,
)

pytestmark = chroot_marks(2400)

VENV = "/opt/signalbeam/venv"
DATA = "/var/lib/signalbeam-hub"
HOSTS = ["10.20.0.1", "10.20.0.2", "10.20.0.3"]  # written into configs, never dialled here
NODE_UNIT = "signalbeam-hub-node.service"


@dataclass
class Cluster:
    roots: list[Path]
    first: dict[str, Any]
    second: dict[str, Any]
    stage: Path
    inventory: Path


def pyinfra(inventory: Path, *extra: str, check: bool = True) -> dict[str, Any]:
    argv = [PYINFRA, "-y", "--json", str(inventory), str(ROOT / "deploy" / "hub.py"), *extra]
    res = subprocess.run(
        argv, capture_output=True, text=True, env=pyinfra_env(), cwd=ROOT, timeout=1800
    )
    if check:
        assert res.returncode == 0, f"pyinfra failed ({res.returncode}):\n{res.stderr[-6000:]}"
    try:
        doc: dict[str, Any] = json.loads(res.stdout)
    except ValueError:
        doc = {}
    doc["stderr"], doc["returncode"] = res.stderr, res.returncode
    return doc


def changed_on(doc: dict[str, Any], host: str) -> list[str]:
    """Names of the operations that changed (or failed on) ``host``. One call site is one
    operation for every host, listed under every name it had (node 1's and node 2's)."""
    return [
        " | ".join(op["names"])
        for op in doc["results"]["operations"]
        if host in op["success"] or host in op["error"]
    ]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("deploy-cluster")
    try:
        package = {
            "signalbeam_wheel": str(project_wheel(work / "wheel")),
            "signalbeam_wheelhouse": str(cached_wheelhouse(work)),
            "signalbeam_start_services": False,
        }
        roots = [copy_rootfs(work / f"node{i}-root") for i in range(3)]
        stage = work / "operator" / "cluster-files"
        hosts = [
            (
                f"@chroot/{root}",
                {
                    **package,
                    "signalbeam_hub_public_host": HOSTS[i],
                    "signalbeam_hub_cluster_hosts": HOSTS,
                    "signalbeam_hub_cluster_node": i,
                    "signalbeam_hub_cluster_files": str(stage),
                    "signalbeam_hub_litestream": False,
                },
            )
            for i, root in enumerate(roots)
        ]
        inventory = work / "inventory.py"
        inventory.write_text(f"hubs = {hosts!r}\n")
        first = pyinfra(inventory)
        second = pyinfra(inventory)
        yield Cluster(roots, first, second, stage, inventory)
    finally:
        # Three Debian roots are about a GB: not worth keeping in pytest's tmp history.
        shutil.rmtree(work, ignore_errors=True)


def name(root: Path) -> str:
    return f"@chroot/{root}"


def mode_owner(path: Path) -> tuple[int, int]:
    st = path.stat()
    return stat.S_IMODE(st.st_mode), st.st_uid


def test_node_0_is_the_hub_and_the_others_run_nats_server(cluster: Cluster) -> None:
    hub_root = cluster.roots[0]
    first0 = changed_on(cluster.first, name(hub_root))
    for step in ("Initialise the hub", "Write hub.toml", "Write signalbeam-hub.service"):
        assert any(step in n for n in first0), f"{step!r} not among {first0}"
    cfg = parse_toml((hub_root / DATA.lstrip("/") / "hub.toml").read_text())
    assert cfg.cluster_hosts == tuple(HOSTS) and cfg.cluster_local == (0,)
    assert cfg.route_tls and cfg.jwt_auth
    assert not (hub_root / "etc/systemd/system" / NODE_UNIT).exists()

    for i in (1, 2):
        root = cluster.roots[i]
        first = changed_on(cluster.first, name(root))
        for step in (f"node{i}.conf", f"node{i}-key.pem", f"Write {NODE_UNIT}"):
            assert any(step in n for n in first), f"{step!r} not among {first}"
        assert not any("Initialise the hub" in n for n in first)
        etc = root / "etc/systemd/system"
        assert not (etc / "signalbeam-hub.service").exists()
        unit = unit_settings((etc / NODE_UNIT).read_text())
        assert unit["ExecStart"] == f"{VENV}/bin/nats-server -c {DATA}/nats/node{i}.conf"
        assert unit["User"] == "signalbeam" and unit["Restart"] == "always"
        assert unit["ProtectSystem"] == "strict" and unit["ReadWritePaths"] == DATA
        assert (etc / "multi-user.target.wants" / NODE_UNIT).is_symlink()
        res = in_root(root, "systemd-analyze", "verify", f"/etc/systemd/system/{NODE_UNIT}")
        noise = [ln for ln in (res.stdout + res.stderr).splitlines() if NODE_UNIT in ln]
        assert res.returncode == 0 and not noise, res.stdout + res.stderr


def test_each_node_holds_only_its_own_files_private(cluster: Cluster) -> None:
    hub_data = cluster.roots[0] / DATA.lstrip("/")
    for i in (1, 2):
        root = cluster.roots[i]
        entry = passwd_entry(root, "signalbeam")
        assert entry is not None
        uid = int(entry[2])
        data = root / DATA.lstrip("/")
        route = data / "tls" / "route"
        assert sorted(p.name for p in route.iterdir()) == sorted(
            ["ca.pem", f"node{i}-cert.pem", f"node{i}-key.pem"]
        )
        for rel in (f"nats/node{i}.conf", "tls/route/ca.pem", f"tls/route/node{i}-key.pem"):
            assert mode_owner(data / rel) == (0o600, uid), rel
            assert (data / rel).read_bytes() == (hub_data / rel).read_bytes(), rel
        for rel in ("", "nats", "tls", "tls/route", f"nats/node{i}"):
            assert mode_owner(data / rel) == (0o700, uid), rel
        assert not (data / "hub.toml").exists() and not (data / "secrets.json").exists()
        # The node's own nats-server, as the hub user, loads its config and TLS files.
        res = subprocess.run(
            ["chroot", "--userspec=signalbeam:signalbeam", str(root),
             f"{VENV}/bin/nats-server", "-t", "-c", f"{DATA}/nats/node{i}.conf"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        conf = json.loads((data / f"nats/node{i}.conf").read_text())
        assert conf["cluster"]["tls"]["verify"] is True
        assert conf["server_name"] == f"signalbeam-hub-{i}"
    # The operator's copy: owner-only, and never the CA key or node 0's key.
    assert stat.S_IMODE(cluster.stage.stat().st_mode) == 0o700
    staged = sorted(p.name for p in cluster.stage.iterdir())
    assert "ca-key.pem" not in staged and "node0-key.pem" not in staged


def test_a_second_run_changes_nothing(cluster: Cluster) -> None:
    for root in cluster.roots:
        assert changed_on(cluster.second, name(root)) == [], name(root)


def test_a_node_without_its_hub_is_refused_clearly(cluster: Cluster, tmp_path: Path) -> None:
    lone = tmp_path / "inventory.py"
    text = cluster.inventory.read_text().replace(str(cluster.stage), str(tmp_path / "empty"))
    lone.write_text(text)
    res = pyinfra(lone, "--limit", name(cluster.roots[1]), check=False)
    assert res["returncode"] != 0
    assert "bad data variable signalbeam_hub_cluster_node" in res["stderr"], res["stderr"][-3000:]
    assert "deploy the cluster's hosts together" in res["stderr"]
