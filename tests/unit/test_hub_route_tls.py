"""TLS on the cluster's routes (docs/hub.md "NATS cluster"): the route CA and node
certificates init makes or signs with the operator's CA, the nodes' `cluster.tls` blocks,
the checks, and `signalbeam-hub route-certs` renewal. The cluster itself, and a rogue
server refused, run in tests/integration/test_hub_cluster_tls.py."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509

from hub import cli, natsconf
from hub import tls as hubtls
from hub.config import DataDir, HubConfig, Secrets, check_tls, load, parse_toml
from hub.errors import ConfigError
from sbutil.tls import self_signed_pem

HOSTS = ("10.0.0.1", "hub-b.example.com", "10.0.0.3")
REMOTE = HubConfig(
    nats_auth="jwt", cluster_hosts=HOSTS, cluster_local=(0,), route_tls=True, host="127.0.0.1"
)
SEC = Secrets("h" * 32, "o" * 32, "e" * 32, "r" * 32)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_node_certificates_name_the_host_peers_dial_and_chain_to_the_ca(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    natsconf.write_route_certs(REMOTE, data)
    ca = cert(data.route_ca)
    for i, host in enumerate(HOSTS):
        node = cert(data.route_cert(i))
        node.verify_directly_issued_by(ca)
        sans = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in sans.get_values_for_type(x509.IPAddress)]
        names += sans.get_values_for_type(x509.DNSName)
        assert host in names and f"signalbeam-hub-{i}" in names
        usage = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {u.dotted_string for u in usage} == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"}
        for path in (data.route_cert(i), data.route_key(i)):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.route_ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.route_tls_dir.stat().st_mode) == 0o700


def test_each_node_config_verifies_routes_with_its_own_certificate(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    for i in range(3):
        conf = json.loads(natsconf.render(REMOTE, data, SEC, node=natsconf.nodes(REMOTE)[i]))
        assert conf["cluster"]["tls"] == {
            "cert_file": str(data.route_cert(i)),
            "key_file": str(data.route_key(i)),
            "ca_file": str(data.route_ca),
            "verify": True,
            "timeout": natsconf.TLS_TIMEOUT,
        }
    plain = json.loads(natsconf.render(REMOTE.with_overrides(route_tls=False), data, SEC))
    assert "tls" not in plain["cluster"]  # a cluster from before route TLS, until route-certs
    one = json.loads(natsconf.render(HubConfig(), data, SEC))
    assert "cluster" not in one


def test_route_tls_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        parse_toml("route_tls = true")
    assert e.value.field == "route_tls"
    data = DataDir(tmp_path)
    with pytest.raises(ConfigError, match="route_tls"):
        check_tls(REMOTE, data)  # no files yet
    natsconf.write_route_certs(REMOTE, data)
    check_tls(REMOTE, data)
    # Node 0's key swapped for another node's: refused, naming the setting.
    data.route_key(0).write_bytes(data.route_key(1).read_bytes())
    with pytest.raises(ConfigError, match="route_tls"):
        check_tls(REMOTE, data)


def test_the_operators_ca_signs_and_its_key_is_not_copied(tmp_path: Path) -> None:
    ca_cert, ca_key = hubtls.route_ca_pem("ops CA")
    (tmp_path / "ca.pem").write_bytes(ca_cert)
    (tmp_path / "ca-key.pem").write_bytes(ca_key)
    root = tmp_path / "hub"
    assert (
        cli.main(
            [
                "init",
                "--data",
                str(root),
                "--json",
                "--cluster-hosts",
                ",".join(HOSTS),
                "--cluster-local",
                "0",
                "--no-litestream",
                "--route-ca-cert",
                str(tmp_path / "ca.pem"),
                "--route-ca-key",
                str(tmp_path / "ca-key.pem"),
            ]
        )
        == 0
    )
    data = DataDir(root)
    cfg, _ = load(data)
    assert cfg.route_tls
    assert data.route_ca.read_bytes() == ca_cert
    assert not data.route_ca_key.exists()
    cert(data.route_cert(2)).verify_directly_issued_by(x509.load_pem_x509_certificate(ca_cert))
    # Without the CA key here, a renewal needs the CA again.
    assert cli.main(["route-certs", "--data", str(root)]) == 2


def test_a_certificate_that_is_no_ca_or_a_wrong_key_is_refused(tmp_path: Path) -> None:
    leaf, leaf_key = self_signed_pem("not a CA", ["x.example"])
    ca, _ = hubtls.route_ca_pem()
    _, other_key = hubtls.route_ca_pem()
    for name, content in (("leaf.pem", leaf), ("leaf-key.pem", leaf_key), ("ca.pem", ca)):
        (tmp_path / name).write_bytes(content)
    (tmp_path / "other-key.pem").write_bytes(other_key)
    with pytest.raises(hubtls.CertProblem, match="not a CA"):
        hubtls.load_ca(tmp_path / "leaf.pem", tmp_path / "leaf-key.pem")
    with pytest.raises(hubtls.CertProblem, match="not the key"):
        hubtls.load_ca(tmp_path / "ca.pem", tmp_path / "other-key.pem")


def test_route_certs_renews_from_the_same_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "hub"
    assert cli.main(["init", "--data", str(root), "--json", "--cluster", "--no-litestream"]) == 0
    data = DataDir(root)
    ca_before = data.route_ca.read_bytes()
    serials = [cert(data.route_cert(i)).serial_number for i in range(3)]
    capsys.readouterr()
    assert cli.main(["route-certs", "--data", str(root)]) == 0
    assert str(data.route_cert(1)) in capsys.readouterr().out
    assert data.route_ca.read_bytes() == ca_before
    ca = cert(data.route_ca)
    for i in range(3):
        renewed = cert(data.route_cert(i))
        assert renewed.serial_number != serials[i]
        renewed.verify_directly_issued_by(ca)
        assert stat.S_IMODE(data.route_key(i).stat().st_mode) == 0o600


def test_route_certs_turns_route_tls_on_for_a_cluster_from_before(tmp_path: Path) -> None:
    root = tmp_path / "hub"
    assert cli.main(["init", "--data", str(root), "--json", "--cluster", "--no-litestream"]) == 0
    data = DataDir(root)
    text = data.config.read_text().replace("route_tls = true", "route_tls = false")
    data.config.write_text(text)
    assert not load(data)[0].route_tls
    assert cli.main(["route-certs", "--data", str(root)]) == 0
    assert load(data)[0].route_tls
    assert cli.main(["route-certs", "--data", str(tmp_path / "nope")]) == 2


def test_route_certs_replaces_broken_route_files(tmp_path: Path) -> None:
    root = tmp_path / "hub"
    assert cli.main(["init", "--data", str(root), "--json", "--cluster", "--no-litestream"]) == 0
    data = DataDir(root)
    data.route_key(1).unlink()  # a lost key: the hub refuses to start on it ...
    with pytest.raises(ConfigError, match="route_tls"):
        load(data)
    assert cli.main(["route-certs", "--data", str(root)]) == 0  # ... and this mends it
    cfg, _ = load(data)
    check_tls(cfg, data)
