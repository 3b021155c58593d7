"""TLS on the routes of the hub's 3-node NATS cluster (docs/hub.md "NATS cluster"), on
loopback with real nats-servers: `signalbeam-hub init --cluster` makes a route CA and one
certificate per node, `signalbeam-hub nats` runs the three nodes from the configs init wrote.

- the cluster forms over TLS routes verified both ways: a JetStream meta leader, an R3
  stream whose writes every replica stores;
- a server that knows the route password but has no certificate from the cluster's CA (one
  from another CA, or none at all) is refused: it never becomes a route of any node.
"""

from __future__ import annotations

import functools
import json
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography import x509

from hub import tls as hubtls
from protocol import natsauth
from tests.harness.binaries import require_binary
from tests.harness.ports import free_port, free_port_block
from tests.harness.procs import ManagedProcess
from tests.harness.wait import eventually

pytestmark = pytest.mark.timeout(300)
WAIT = 90.0


def monitor(port: int, path: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=10) as r:
            return dict(json.loads(r.read()))
    except (urllib.error.URLError, OSError, ValueError):
        return {}


class TlsCluster:
    """`init --cluster` (JWT mode, what init writes by default) and `signalbeam-hub nats`."""

    def __init__(self, root: Path) -> None:
        self.data = root / "hub"
        self.ports = {n: free_port_block(3) for n in ("client", "leafnode", "monitor", "cluster")}
        argv = [sys.executable, "-m", "hub.cli", "init", "--data", str(self.data), "--json"]
        argv += ["--cluster", "--host", "127.0.0.1", "--public-host", "127.0.0.1"]
        argv += ["--no-litestream", "--http-port", str(free_port())]
        for name, port in self.ports.items():
            argv += [f"--{name}-port", str(port)]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
        self.init = json.loads(out.stdout)
        self.proc = ManagedProcess(
            "hub-nats",
            [sys.executable, "-m", "hub.cli", "nats", "--data", str(self.data)],
            root / "nats-proc.log",
        )

    def routes(self, index: int) -> list[str]:
        """The server names node ``index`` has routes to (one per pooled connection)."""
        doc = monitor(self.ports["monitor"] + index, "routez")
        return [str(r.get("remote_name")) for r in doc.get("routes", [])]

    def meta_leader(self) -> str | None:
        meta = monitor(self.ports["monitor"], "jsz").get("meta_cluster") or {}
        return meta.get("leader") or None

    def node_log(self, index: int) -> str:
        path = self.data / "logs" / f"nats-server-{index}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def hub_nc(self) -> Any:
        secret = json.loads((self.data / "secrets.json").read_text())["hub_password"]
        servers = [f"nats://127.0.0.1:{self.ports['client'] + i}" for i in range(3)]
        return await nats.connect(
            servers, user="hub", password=secret, **natsauth.auth_options("", secret)
        )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[TlsCluster]:
    c = TlsCluster(tmp_path)
    try:
        yield c
    finally:
        c.proc.stop()


def test_init_writes_route_pki_private_with_each_nodes_host(tmp_path: Path) -> None:
    c = TlsCluster(tmp_path)
    c.proc.stop()
    route = c.data / "tls" / "route"
    assert stat.S_IMODE(route.stat().st_mode) == 0o700
    names = sorted(p.name for p in route.iterdir())
    want = ["ca-key.pem", "ca.pem"] + [
        f"node{i}-{k}.pem" for i in range(3) for k in ("cert", "key")
    ]
    assert names == sorted(want)
    for p in route.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    ca = x509.load_pem_x509_certificate((route / "ca.pem").read_bytes())
    for i in range(3):
        cert = x509.load_pem_x509_certificate((route / f"node{i}-cert.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "127.0.0.1" in [str(a) for a in sans.get_values_for_type(x509.IPAddress)]
        conf = json.loads((c.data / "nats" / f"node{i}.conf").read_text())
        tls = conf["cluster"]["tls"]
        assert tls["verify"] is True
        assert tls["cert_file"] == str(route / f"node{i}-cert.pem")
        assert tls["ca_file"] == str(route / "ca.pem")
    assert c.init["cluster"]["route_ca"] == str(route / "ca.pem")


async def test_tls_routes_form_the_cluster_and_refuse_a_rogue(
    cluster: TlsCluster, tmp_path: Path
) -> None:
    c = cluster
    await eventually(
        lambda: all(
            {"signalbeam-hub-0", "signalbeam-hub-1", "signalbeam-hub-2"} - {f"signalbeam-hub-{i}"}
            <= set(c.routes(i))
            for i in range(3)
        ),
        "every node routed to the two others",
        timeout=WAIT,
    )
    for i in range(3):
        varz = monitor(c.ports["monitor"] + i, "varz")["cluster"]
        assert varz["tls_required"] is True and varz["tls_verify"] is True, varz
    await eventually(c.meta_leader, "a JetStream meta leader", timeout=WAIT)

    # An R3 stream: every write stored by all three replicas.
    nc = await c.hub_nc()
    try:
        js = nc.jetstream()

        async def made() -> bool:
            try:
                await js.add_stream(name="TLSR3", subjects=["tlsr3.>"], num_replicas=3)
                return True
            except Exception:
                return False

        await eventually(made, "the R3 stream made", timeout=WAIT)
        for i in range(20):
            await js.publish("tlsr3.x", f"m{i}".encode(), timeout=30)

        async def replicated() -> bool:
            info = await js.stream_info("TLSR3")
            reps = info.cluster.replicas if info.cluster else []
            return (
                info.state.messages == 20
                and len(reps or []) == 2
                and all(r.current for r in reps or [])
            )

        await eventually(replicated, "20 messages on every replica", timeout=WAIT)
        info = await js.stream_info("TLSR3")
        assert info.config.num_replicas == 3
    finally:
        await nc.close()

    # Rogues that know the route password: one with a certificate from another CA (trusting
    # the real CA, so only the cluster's side can refuse it), one with no TLS at all.
    password = json.loads((c.data / "secrets.json").read_text())["route_password"]
    other_ca = hubtls.route_ca_pem("rogue CA")
    cert_pem, key_pem = hubtls.route_node_pem(*other_ca, "signalbeam-hub-9", ["127.0.0.1"])
    (tmp_path / "rogue-cert.pem").write_bytes(cert_pem)
    (tmp_path / "rogue-key.pem").write_bytes(key_pem)
    node0 = f"nats-route://route:{password}@127.0.0.1:{c.ports['cluster']}"
    rogues = []
    for name, tls in (
        (
            "rogue-wrong-ca",
            {
                "cert_file": str(tmp_path / "rogue-cert.pem"),
                "key_file": str(tmp_path / "rogue-key.pem"),
                "ca_file": str(c.data / "tls" / "route" / "ca.pem"),
                "verify": True,
                "timeout": 5,
            },
        ),
        ("rogue-plain", None),
    ):
        mon = free_port()
        conf: dict[str, Any] = {
            "server_name": name,
            "host": "127.0.0.1",
            "port": free_port(),
            "http": f"127.0.0.1:{mon}",
            "cluster": {
                "name": "signalbeam",
                "host": "127.0.0.1",
                "port": free_port(),
                "authorization": {"user": "route", "password": password},
                "routes": [node0],
            },
        }
        if tls is not None:
            conf["cluster"]["tls"] = tls
        path = tmp_path / f"{name}.conf"
        path.write_text(json.dumps(conf))
        proc = ManagedProcess(
            name, [require_binary("nats-server"), "-c", str(path)], tmp_path / f"{name}.log"
        )
        rogues.append((name, mon, proc))
    try:
        for name, mon, _ in rogues:
            await eventually(functools.partial(monitor, mon, "varz"), f"{name} up", timeout=WAIT)

        def refused() -> bool:
            # Node 0's reasons (each rogue retries, so they repeat): the plain one spoke no
            # TLS; the other CA's certificate is not one node 0 asks for, so the rogue's TLS
            # client offers none, and a certificate is required.
            errors = [ln for ln in c.node_log(0).splitlines() if "TLS route handshake error" in ln]
            return any("does not look like a TLS handshake" in ln for ln in errors) and any(
                "certificate" in ln for ln in errors
            )

        await eventually(refused, "node 0 refused both rogues' handshakes", timeout=WAIT)
        for name, mon, _ in rogues:
            assert monitor(mon, "routez").get("num_routes") == 0, name
        for i in range(3):
            assert not {r for r in c.routes(i) if r.startswith("rogue")}, c.routes(i)
        assert all(p.alive for _, _, p in rogues)
    finally:
        for _, _, proc in rogues:
            proc.stop()
