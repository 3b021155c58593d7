"""Agent config validation: table-driven, every bad value names its field."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import (
    AgentConfig,
    config_from_dict,
    hostname_slug,
    load_config,
    parse_size,
)
from agent.errors import ConfigError
from protocol.subjects import valid_device_id
from sbutil.duration import parse_duration


def test_defaults() -> None:
    cfg = config_from_dict({"device_id": "dev-1"})
    assert cfg == AgentConfig(device_id="dev-1", device_id_configured=True)
    assert cfg.reconcile.interval == 60
    assert cfg.metrics.interval == 10
    assert (cfg.metrics.retention.raw, cfg.metrics.retention.minute) == (3600, 7 * 86400)
    assert cfg.metrics.retention.hour == 90 * 86400
    assert (cfg.http.bind, cfg.http.port) == ("127.0.0.1", 48484)
    assert cfg.db_path == Path("/var/lib/signalbeam-agent/agent.db")
    assert valid_device_id(config_from_dict({}).device_id)


def test_full_file(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text(
        """
data_dir = "data"
device_id = "edge-7"
engine = "podman"
engine_socket = "unix:///run/podman/podman.sock"
image_disk_budget = "2GiB"

[reconcile]
interval = "2m"

[metrics]
interval = 5
[metrics.retention]
raw = "30m"
1m = "1d"
1h = "30d"

[outbox]
max_bytes = "8MB"
max_age = "3d"

[[registry_auth]]
registry = "127.0.0.1:5000"
username = "u"
password = "p"

[http]
enabled = false
bind = "0.0.0.0"
port = 8080

[hub]
url = "nats://127.0.0.1:4222"
credentials_file = "creds/device.creds"
"""
    )
    cfg = load_config(f)
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.engine == "podman" and cfg.image_disk_budget == 2 * 1024**3
    assert cfg.reconcile.interval == 120 and cfg.metrics.interval == 5
    assert cfg.metrics.retention.minute == 86400
    assert cfg.outbox.max_bytes == 8_000_000 and cfg.outbox.max_age == 3 * 86400
    assert cfg.registry_auth[0].registry == "127.0.0.1:5000"
    assert "p" not in repr(cfg.registry_auth[0])
    assert cfg.hub.credentials_file == str(tmp_path / "creds/device.creds")
    assert cfg.http.enabled is False and cfg.http.port == 8080


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"device_id": "Bad_ID"}, "device_id", "a-z"),
    ({"device_id": ""}, "device_id", "non-empty"),
    ({"device_id": 5}, "device_id", "string"),
    ({"data_dir": ""}, "data_dir", "path"),
    ({"engine": "containerd"}, "engine", "one of"),
    ({"engine_socket": "relative/path"}, "engine_socket", "absolute"),
    ({"image_disk_budget": -1}, "image_disk_budget", "positive"),
    ({"image_disk_budget": "lots"}, "image_disk_budget", "size"),
    ({"reconcile": {"interval": 0}}, "reconcile.interval", "positive duration"),
    ({"reconcile": {"interval": "-5s"}}, "reconcile.interval", "positive duration"),
    ({"reconcile": {"interval": "soon"}}, "reconcile.interval", "positive duration"),
    ({"reconcile": {"interval": True}}, "reconcile.interval", "positive duration"),
    ({"reconcile": {"intervall": 5}}, "reconcile.intervall", "unknown"),
    ({"reconcile": 5}, "reconcile", "table"),
    ({"metrics": {"interval": "0s"}}, "metrics.interval", "positive"),
    ({"metrics": {"retention": {"raw": "x"}}}, "metrics.retention.raw", "duration"),
    ({"metrics": {"retention": {"1m": -1}}}, "metrics.retention.1m", "positive"),
    ({"metrics": {"retention": {"5m": "1d"}}}, "metrics.retention.5m", "unknown"),
    ({"outbox": {"max_bytes": 0}}, "outbox.max_bytes", "positive"),
    ({"outbox": {"max_age": "forever"}}, "outbox.max_age", "duration"),
    ({"registry_auth": {"registry": "x"}}, "registry_auth", "list"),
    (
        {"registry_auth": [{"registry": "x", "username": "u"}]},
        "registry_auth[0].password",
        "required",
    ),
    (
        {"registry_auth": [{"registry": "x", "username": "u", "password": "p", "t": 1}]},
        "registry_auth[0].t",
        "unknown",
    ),
    ({"registry_auth": ["x"]}, "registry_auth[0]", "table"),
    ({"http": {"port": 70000}}, "http.port", "port"),
    ({"http": {"port": "80"}}, "http.port", "port"),
    ({"http": {"bind": "localhost"}}, "http.bind", "IP address"),
    ({"http": {"enabled": "yes"}}, "http.enabled", "true or false"),
    ({"hub": {"url": "http://x"}}, "hub.url", "nats://"),
    ({"hub": {"credentials_file": ""}}, "hub.credentials_file", "path"),
    ({"colour": "blue"}, "colour", "unknown"),
]


@pytest.mark.parametrize(("doc", "field", "needle"), BAD)
def test_bad_values_name_their_field(doc: dict[str, Any], field: str, needle: str) -> None:
    with pytest.raises(ConfigError) as ei:
        config_from_dict(doc)
    assert ei.value.field == field
    assert needle in str(ei.value)
    assert str(ei.value).startswith(f"{field}: ")


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("device_id = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(binary)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("500ms", 0.5), ("1h30m", 5400), ("7d", 604800), (3, 3), (2.5, 2.5)],
)
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"), [(10, 10), ("1KiB", 1024), ("2MB", 2_000_000), ("3 GiB", 3 * 1024**3)]
)
def test_parse_size(text: Any, size: int) -> None:
    assert parse_size(text) == size


@given(st.text(max_size=80))
def test_hostname_slug_always_valid(name: str) -> None:
    assert valid_device_id(hostname_slug(name))


def test_hostname_slug_examples() -> None:
    assert hostname_slug("Edge_Box.01") == "edge-box-01"
    assert hostname_slug("___") == "device"


# ------------------------------------------------------------------ TLS on the leaf link

_PEM = "-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def _ca(tmp_path: Path) -> Path:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_hub_ca_file_and_leaf_url(tmp_path: Path) -> None:
    ca = _ca(tmp_path)
    cfg = config_from_dict(
        {"hub": {"ca_file": "ca.pem", "leaf_url": "tls://hub.example.com:7422"}},
        base_dir=tmp_path,
    )
    assert cfg.hub.ca_file == str(ca)  # relative to the config file's directory
    assert cfg.hub.leaf_url == "tls://hub.example.com:7422"
    assert config_from_dict({}).hub.ca_file is None


def test_hub_heartbeat_interval_reaches_the_sync_settings() -> None:
    from agent.sync.service import settings_from_config

    assert config_from_dict({}).hub.heartbeat_interval == 30.0
    cfg = config_from_dict({"hub": {"url": "nats://127.0.0.1:4222", "heartbeat_interval": "2s"}})
    settings = settings_from_config(cfg)
    assert settings is not None and settings.heartbeat_interval == 2.0
    with pytest.raises(ConfigError) as ei:
        config_from_dict({"hub": {"heartbeat_interval": "0s"}})
    assert ei.value.field == "hub.heartbeat_interval"


@pytest.mark.parametrize(
    ("hub", "field", "needle"),
    [
        ({"ca_file": "missing.pem"}, "hub.ca_file", "file not found"),
        ({"ca_file": ""}, "hub.ca_file", "path"),
        ({"ca_file": "notpem.txt"}, "hub.ca_file", "no PEM certificate"),
        ({"ca_file": "garbled.pem"}, "hub.ca_file", "not a valid PEM CA"),
        ({"leaf_url": "https://hub:7422"}, "hub.leaf_url", "tls://"),
        ({"leaf_url": "tls://hub"}, "hub.leaf_url", "host:port"),
        ({"leaf_url": "tls://u:p@hub:7422"}, "hub.leaf_url", "credentials"),
        ({"leaf_url": 7422}, "hub.leaf_url", "tls://"),
    ],
)
def test_bad_hub_tls_settings_name_their_field(
    tmp_path: Path, hub: dict[str, Any], field: str, needle: str
) -> None:
    (tmp_path / "notpem.txt").write_text("hello\n")
    (tmp_path / "garbled.pem").write_text(_PEM.format(body="bm90IGEgY2VydA=="))
    with pytest.raises(ConfigError) as ei:
        config_from_dict({"hub": hub}, base_dir=tmp_path)
    assert ei.value.field == field
    assert needle in str(ei.value)


def test_leaf_remote_gets_tls_from_a_pinned_ca_or_a_tls_url(tmp_path: Path) -> None:
    from agent.sync.leaf import LeafSettings, remote_conf

    base = LeafSettings("d1", tmp_path, "nats-leaf://hub:7422", user="d1", password="p w")
    assert "tls" not in remote_conf(base)
    assert remote_conf(base)["url"] == "nats-leaf://d1:p%20w@hub:7422"
    pinned = remote_conf(replace(base, ca_file="/etc/ca.pem"))
    assert pinned["url"] == "tls://d1:p%20w@hub:7422"  # a pinned CA means TLS
    assert pinned["tls"] == {"timeout": 5, "ca_file": "/etc/ca.pem"}
    # tls:// without a CA file: the system's trusted CAs (e.g. Let's Encrypt).
    assert remote_conf(replace(base, hub_leaf_url="tls://hub:7422"))["tls"] == {"timeout": 5}


def test_leaf_link_error_is_the_last_recent_err_line(tmp_path: Path) -> None:
    import time as _time

    from agent.sync.leaf import last_link_error

    log = tmp_path / "leaf.log"
    assert last_link_error(log, _time.time()) is None  # no log yet
    stamp = _time.strftime("%Y/%m/%d %H:%M:%S.000001", _time.localtime(1_700_000_000))
    log.write_text(
        f"[1] {stamp} [INF] 1.2.3.4:7422 - lid:5 - Leafnode connection created\n"
        f"[1] {stamp} [ERR] 1.2.3.4:7422 - lid:5 - TLS leafnode handshake error: tls: "
        "failed to verify certificate: x509: certificate signed by unknown authority\n"
        f"[1] {stamp} [ERR] Error trying to connect as leafnode to remote server "
        "(attempt 7): dial tcp 1.2.3.4:7422: connect: connection refused\n"
        f"[1] {stamp} [INF] 1.2.3.4:7422 - lid:6 - Leafnode connection closed\n"
    )
    assert last_link_error(log, 1_700_000_010) == (
        "Error trying to connect as leafnode to remote server: "
        "dial tcp 1.2.3.4:7422: connect: connection refused"
    )
    assert last_link_error(log, 1_700_001_000) is None  # old news
    log.write_text(log.read_text().splitlines(keepends=True)[1])
    assert last_link_error(log, 1_700_000_010) == (
        "TLS leafnode handshake error: tls: failed to verify certificate: "
        "x509: certificate signed by unknown authority"
    )
