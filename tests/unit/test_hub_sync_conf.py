"""Device NATS users and the sync knobs of the hub config, as the nats-server config sees them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from hub.config import DataDir, HubConfig, Secrets, parse_toml
from hub.errors import ConfigError, HubError
from hub.natsconf import device_user, render
from hub.store import Store
from hub.sync.enroll import enroll_in_store, normalise_tags
from protocol.enroll import DeviceFacts, EnrollRequest
from tests.harness.tls import cert_pair


def test_device_user_is_limited_to_its_own_subjects() -> None:
    conf = device_user("dev-1", "pw").to_conf()
    assert conf["user"] == "dev-1"
    pub = conf["permissions"]["publish"]["allow"]
    sub = conf["permissions"]["subscribe"]["allow"]
    assert "sb.dev.dev-1.>" in pub and not any("dev-2" in p or "*" in p for p in pub)
    assert "$JS.hub.API.DIRECT.GET.KV_desired.$KV.desired.dev-1" in pub
    assert sub == [
        "_INBOX.dev-1.>",
        "sb.desired.dev-1",
        "$KV.desired.dev-1",
        "sb.dev.dev-1.rpc.>",
    ]


def test_rendered_config_holds_device_users(tmp_path: Path) -> None:
    doc = json.loads(
        render(HubConfig(), DataDir(tmp_path), Secrets("h", "o", "e"), [device_user("d1", "p")])
    )
    users = [u["user"] for u in doc["accounts"]["SIGNALBEAM"]["users"]]
    assert users == ["hub", "operator", "enroll", "d1"]


def test_offline_grace_is_a_positive_integer() -> None:
    assert parse_toml("offline_grace = 5").offline_grace == 5
    assert HubConfig().offline_grace == 90
    with pytest.raises(ConfigError):
        parse_toml("offline_grace = 0")
    with pytest.raises(ConfigError):
        parse_toml("offline_grace = 1.5")


def test_tags_are_lower_cased_or_refused() -> None:
    assert normalise_tags(("Lab", "rpi", "lab")) == ["lab", "rpi"]
    with pytest.raises(HubError):
        normalise_tags(("a:b",))


def test_reserved_ids_and_refusals_store_nothing(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "hub.db")
    _, token = store.create_enrollment_token("acme", 3600, 5)
    facts = DeviceFacts("h", "x86_64", "linux", "podman", "0.1")
    for bad in ("hub", "enroll", "operator"):
        with pytest.raises(HubError):
            enroll_in_store(store, EnrollRequest(token, bad, facts), "pw")
    assert store.scalar("SELECT count(*) FROM devices") == 0
    assert store.scalar("SELECT uses FROM enrollment_tokens") == 0
    info = enroll_in_store(store, EnrollRequest(token, "d1", facts, ("Lab",)), "pw")
    assert info == {"tenant": "acme", "again": False, "tags": ["lab"]}
    assert store.active_device_credentials() == [("d1", "d1", "pw")]
    store.close()


# ------------------------------------------------------------------ TLS on the leaf link


def test_leaf_tls_off_renders_a_plain_listener_and_url(tmp_path: Path) -> None:
    from hub.natsconf import leaf_url

    cfg = HubConfig(public_host="hub.example.com", leafnode_port=7422)
    doc = json.loads(render(cfg, DataDir(tmp_path), Secrets("h", "o", "e")))
    assert "tls" not in doc["leafnodes"]
    assert leaf_url(cfg) == "nats-leaf://hub.example.com:7422"


def test_leaf_tls_on_requires_tls_and_hands_out_a_tls_url(tmp_path: Path) -> None:
    from hub.config import check_tls
    from hub.natsconf import leaf_url

    data = DataDir(tmp_path)
    cert_pair(data.root / "tls", "leaf")
    # Relative paths are under the data dir.
    cfg = parse_toml('leaf_tls_cert = "tls/leaf-cert.pem"\nleaf_tls_key = "tls/leaf-key.pem"')
    check_tls(cfg, data)
    tls = json.loads(render(cfg, data, Secrets("h", "o", "e")))["leafnodes"]["tls"]
    assert tls["cert_file"] == str(tmp_path / "tls" / "leaf-cert.pem")
    assert tls["key_file"] == str(tmp_path / "tls" / "leaf-key.pem")
    assert leaf_url(cfg) == "tls://127.0.0.1:7422"
    assert leaf_url(replace(cfg, public_host="::1")) == "tls://[::1]:7422"


@pytest.mark.parametrize(
    ("cert", "key", "field", "words"),
    [
        ("tls/leaf-cert.pem", "", "leaf_tls_key", "required when leaf_tls_cert"),
        ("", "tls/leaf-key.pem", "leaf_tls_cert", "required when leaf_tls_key"),
        ("tls/missing.pem", "tls/leaf-key.pem", "leaf_tls_cert", "file not found"),
        ("tls/leaf-cert.pem", "tls/missing.pem", "leaf_tls_key", "file not found"),
        ("tls/leaf-key.pem", "tls/leaf-key.pem", "leaf_tls_cert", "not a PEM certificate"),
        ("tls/leaf-cert.pem", "tls/other-key.pem", "leaf_tls_key", "matching"),
    ],
)
def test_bad_leaf_tls_settings_name_the_field(
    tmp_path: Path, cert: str, key: str, field: str, words: str
) -> None:
    from hub.config import check_tls

    data = DataDir(tmp_path)
    cert_pair(data.root / "tls", "leaf")
    cert_pair(data.root / "tls", "other")
    cfg = HubConfig(leaf_tls_cert=cert, leaf_tls_key=key)
    with pytest.raises(ConfigError) as err:
        check_tls(cfg, data)
    assert err.value.field == field
    assert f"{field}: " in err.value.message and words in err.value.message


def test_load_refuses_a_config_whose_leaf_cert_is_gone(tmp_path: Path) -> None:
    from hub.config import load, save

    data = DataDir(tmp_path)
    cert, key = cert_pair(data.root / "tls", "leaf")
    save(data, HubConfig(leaf_tls_cert=str(cert), leaf_tls_key=str(key)), Secrets("h", "o", "e"))
    cert.unlink()
    with pytest.raises(ConfigError, match="leaf_tls_cert: file not found"):
        load(data)
    assert data.config.exists()  # nothing stored is touched


def test_self_signed_never_overwrites_and_pins_the_host(tmp_path: Path) -> None:
    from cryptography import x509

    from hub.tls import fingerprint, self_signed

    cert, key = cert_pair(tmp_path, "leaf")
    before = fingerprint(cert)
    with pytest.raises(FileExistsError):
        self_signed(cert, key, "hub.example.com")
    assert fingerprint(cert) == before
    assert key.stat().st_mode & 0o777 == 0o600
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    self_signed(tmp_path / "d.pem", tmp_path / "d.key", "hub.example.com")
    parsed = x509.load_pem_x509_certificate((tmp_path / "d.pem").read_bytes())
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["hub.example.com"]


@pytest.mark.parametrize("bad", ["cr-b\n", "a\n", "dev-1\r", "Dev-1", "-a", "a-", "", "a.b", "a b"])
def test_device_ids_match_in_full(bad: str) -> None:
    """Issue 19: ``$`` in ``re.match`` accepts a trailing newline; every check is full."""
    from protocol.subjects import valid_device_id

    assert not valid_device_id(bad)
    with pytest.raises(ValueError):
        device_user(bad, "pw")


def test_names_tags_and_kinds_refuse_a_trailing_newline() -> None:
    from hub.api.validate import NAME_RE
    from protocol.enroll import validate_tags
    from protocol.errors import MessageError

    assert NAME_RE.fullmatch("lab") and not NAME_RE.fullmatch("lab\n")
    with pytest.raises(MessageError):
        validate_tags(["lab\n"])
    with pytest.raises(HubError):
        normalise_tags(("lab\n",))


def test_renderer_refuses_what_nats_server_would_reject(tmp_path: Path) -> None:
    from hub.natsconf import BadUser, NatsUser, is_hash
    from protocol.subjects import valid_subject

    data, sec = DataDir(tmp_path), Secrets.generate()
    for subject in ("sb.dev.a b.>", "sb.dev.cr-b\n.>", "sb..x", "sb.>.x", "sb.a*", ""):
        assert not valid_subject(subject)
        with pytest.raises(BadUser):
            render(HubConfig(), data, sec, [NatsUser("ok", "pw", publish=(subject,))])
    with pytest.raises(BadUser):
        render(HubConfig(), data, sec, [NatsUser("a.b", "pw")])
    assert valid_subject("$JS.hub.API.DIRECT.GET.KV_desired.$KV.desired.dev-1")
    doc = json.loads(render(HubConfig(), data, sec, [device_user("dev-1", "pw")]))
    assert all(is_hash(u["password"]) for u in doc["accounts"]["SIGNALBEAM"]["users"])
