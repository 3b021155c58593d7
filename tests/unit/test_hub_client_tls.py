"""TLS on the hub's client port: config validation, the rendered nats-server config, the URLs
``init`` prints, and the shared client-side helpers (protocol.natstls)."""

from __future__ import annotations

import json
import ssl
from dataclasses import replace
from pathlib import Path

import pytest

from agent.sync.enroll import EXIT_TLS, TLS_ERROR, hub_url
from agent.sync.errors import EnrollError
from hub import cli as hubcli
from hub.config import DataDir, HubConfig, Secrets, check_tls, load, parse_toml
from hub.errors import ConfigError
from hub.natsconf import client_url, render
from hub.natsconf import hub_url as hub_client_url
from hub.tls import own_client_context
from protocol import natstls
from tests.harness.tls import cert_pair

SEC = Secrets("h", "o", "e")


def test_client_tls_off_renders_no_top_level_tls_and_nats_urls(tmp_path: Path) -> None:
    cfg = HubConfig(public_host="hub.example.com")
    doc = json.loads(render(cfg, DataDir(tmp_path), SEC))
    assert "tls" not in doc
    assert client_url(cfg, "operator", "p w") == "nats://operator:p%20w@hub.example.com:4222"
    assert hub_client_url(cfg) == "nats://hub.example.com:4222"


def test_client_tls_on_renders_the_top_level_block_and_tls_urls(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    cert_pair(data.tls_dir, "hub")
    cfg = parse_toml('client_tls_cert = "tls/hub-cert.pem"\nclient_tls_key = "tls/hub-key.pem"')
    check_tls(cfg, data)
    doc = json.loads(render(cfg, data, SEC))
    assert doc["tls"] == {
        "cert_file": str(tmp_path / "tls" / "hub-cert.pem"),
        "key_file": str(tmp_path / "tls" / "hub-key.pem"),
        "timeout": 5,
    }
    assert "tls" not in doc["leafnodes"]  # the two listeners are configured apart
    assert client_url(cfg, "enroll", "x") == "tls://enroll:x@127.0.0.1:4222"
    assert hub_client_url(replace(cfg, public_host="::1")) == "tls://[::1]:4222"


@pytest.mark.parametrize(
    ("cert", "key", "field", "words"),
    [
        ("tls/hub-cert.pem", "", "client_tls_key", "required when client_tls_cert"),
        ("", "tls/hub-key.pem", "client_tls_cert", "required when client_tls_key"),
        ("tls/missing.pem", "tls/hub-key.pem", "client_tls_cert", "file not found"),
        ("tls/hub-cert.pem", "tls/missing.pem", "client_tls_key", "file not found"),
        ("tls/hub-key.pem", "tls/hub-key.pem", "client_tls_cert", "not a PEM certificate"),
        ("tls/hub-cert.pem", "tls/other-key.pem", "client_tls_key", "matching"),
    ],
)
def test_bad_client_tls_settings_name_the_field(
    tmp_path: Path, cert: str, key: str, field: str, words: str
) -> None:
    data = DataDir(tmp_path)
    cert_pair(data.tls_dir, "hub")
    cert_pair(data.tls_dir, "other")
    with pytest.raises(ConfigError) as err:
        check_tls(HubConfig(client_tls_cert=cert, client_tls_key=key), data)
    assert err.value.field == field
    assert f"{field}: " in err.value.message and words in err.value.message


def test_client_tls_keys_must_be_strings() -> None:
    with pytest.raises(ConfigError) as err:
        parse_toml("client_tls_cert = 1")
    assert err.value.field == "client_tls_cert"


def test_init_tls_self_signed_covers_both_listeners(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    rc = hubcli.main(
        ["init", "--data", str(data), "--json", "--no-litestream", "--tls-self-signed"]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["operator_url"].startswith("tls://operator:")
    assert out["enroll_url"].startswith("tls://enroll:")
    assert out["leaf_url"].startswith("tls://")
    # One certificate for both listeners: devices pin one file.
    assert out["client_tls_cert"] == out["leaf_tls_cert"] == str(data / "tls" / "hub-cert.pem")
    assert out["client_tls_fingerprint"] == out["leaf_tls_fingerprint"]
    cfg, _ = load(DataDir(data))
    assert cfg.client_tls_cert == cfg.leaf_tls_cert == "tls/hub-cert.pem"
    conf = json.loads((data / "nats" / "nats-server.conf").read_text())
    assert conf["tls"]["cert_file"] == conf["leafnodes"]["tls"]["cert_file"]


def test_init_leaf_tls_self_signed_leaves_the_client_port_plain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    argv = ["init", "--data", str(data), "--json", "--no-litestream", "--leaf-tls-self-signed"]
    assert hubcli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["operator_url"].startswith("nats://") and out["client_tls_cert"] is None
    assert out["leaf_url"].startswith("tls://")


def test_init_tls_self_signed_excludes_given_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = cert_pair(tmp_path, "hub")
    data = tmp_path / "data"
    argv = ["init", "--data", str(data), "--tls-self-signed"]
    argv += ["--client-tls-cert", str(cert), "--client-tls-key", str(key)]
    assert hubcli.main(argv) == 2
    assert "--tls-self-signed and --client-tls-cert" in capsys.readouterr().err
    assert not (data / "hub.toml").exists()
    with pytest.raises(SystemExit):  # argparse: the two self-signed flags exclude each other
        hubcli.build_parser().parse_args(
            ["init", "--data", str(data), "--tls-self-signed", "--leaf-tls-self-signed"]
        )


def test_client_context_pins_the_ca_and_the_hub_skips_only_the_name(tmp_path: Path) -> None:
    cert, _ = cert_pair(tmp_path, "hub")
    ctx = natstls.client_context(str(cert))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert ctx.cert_store_stats()["x509"] == 1  # that file alone, no system CAs
    own = own_client_context(cert)
    assert own.verify_mode == ssl.CERT_REQUIRED and not own.check_hostname


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    exc.verify_code = code
    exc.verify_message = message
    return exc


def test_explain_names_the_ca_file_or_the_host() -> None:
    bad_ca = natstls.explain(_verify_error(18, "self-signed certificate"), "h", "/etc/ca.pem")
    assert bad_ca is not None and bad_ca.field == "ca_file"
    assert bad_ca.message.startswith("the hub's certificate is not signed by CA /etc/ca.pem")
    no_ca = natstls.explain(_verify_error(20, "unable to get local issuer"), "h", None)
    assert no_ca is not None and "not signed by a CA this machine trusts" in no_ca.message
    name = natstls.explain(_verify_error(62, "Hostname mismatch"), "hub.example.com", "ca.pem")
    assert name is not None and name.field == "host" and "'hub.example.com'" in name.message
    assert natstls.explain(ConnectionRefusedError(), "h", None) is None
    assert natstls.wants_tls("tls://a:1") and not natstls.wants_tls("nats://a:1")


def test_agent_enroll_takes_tls_urls_only_besides_nats() -> None:
    assert hub_url("tls://hub:4222", "enroll", "pw") == "tls://enroll:pw@hub:4222"
    assert hub_url("hub:4222", "enroll", "pw") == "nats://enroll:pw@hub:4222"
    with pytest.raises(EnrollError) as err:
        hub_url("ws://hub:4222")
    assert err.value.field == "hub" and err.value.code == "invalid"
    assert TLS_ERROR == "tls" and EXIT_TLS == 3


def test_agent_enroll_refuses_a_missing_ca_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main as agent_main

    argv = ["enroll", "--data-dir", str(tmp_path), "--hub", "tls://127.0.0.1:1"]
    argv += ["--token", "sbt_x", "--device-id", "dev-1", "--json"]
    argv += ["--ca-file", str(tmp_path / "nope.pem")]
    assert agent_main(argv) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert err["field"] == "ca_file" and "--ca-file: file not found" in err["message"]
