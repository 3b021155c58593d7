"""deploy/validate.py: every data variable's rules, each error naming its variable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy.fields import DeployDataError
from deploy.validate import (
    DEVICE_ID_RE,
    KNOWN_VARS,
    TAG_RE,
    validate_agent,
    validate_hub,
)
from protocol.enroll import validate_tags
from protocol.errors import MessageError
from protocol.subjects import valid_device_id
from tests.harness.tls import cert_pair

HUB = {"signalbeam_hub_public_host": "hub.example.com"}
ENROLL = {
    "signalbeam_hub": "hub.example.com:4222",
    "signalbeam_enroll_token": "sbt_abc_secret",
    "signalbeam_enroll_password": "pw",
}


def _hub_error(data: dict[str, Any], **kwargs: Any) -> DeployDataError:
    with pytest.raises(DeployDataError) as exc:
        validate_hub({**HUB, **data}, **kwargs)
    return exc.value


def _agent_error(data: dict[str, Any]) -> DeployDataError:
    with pytest.raises(DeployDataError) as exc:
        validate_agent(data)
    return exc.value


# ---------------------------------------------------------------- hub


def test_hub_defaults() -> None:
    hub = validate_hub({}, inventory_name="hub.example.com")
    assert hub.public_host == "hub.example.com"
    assert hub.user == "signalbeam"
    assert hub.data_dir == "/var/lib/signalbeam-hub"
    assert hub.package.venv == "/opt/signalbeam/venv"
    assert hub.package.pip_spec == "signalbeam-edge"
    assert hub.package.wheel is None
    assert hub.ports == (4222, 7422, 8222, 8080)
    assert hub.litestream and hub.replica_url == ""
    assert not hub.needs_bind_capability


def test_hub_public_host_required_for_local_connector() -> None:
    # "@local" or "@docker/..." is no address a device could dial.
    with pytest.raises(DeployDataError) as exc:
        validate_hub({}, inventory_name="@local")
    assert exc.value.var == "signalbeam_hub_public_host"
    assert validate_hub(HUB, inventory_name="@local").public_host == "hub.example.com"


@pytest.mark.parametrize("value", ["hub example", "-hub", "hub_1.example.com", "a" * 64])
def test_hub_public_host_must_be_a_host(value: str) -> None:
    assert _hub_error({"signalbeam_hub_public_host": value}).var == "signalbeam_hub_public_host"


def test_hub_public_host_may_be_an_ip() -> None:
    assert validate_hub({"signalbeam_hub_public_host": "10.0.0.5"}).public_host == "10.0.0.5"


def test_hub_ports_from_cli_strings_and_conflicts() -> None:
    # `pyinfra --data signalbeam_hub_client_port=4300` hands over a string.
    hub = validate_hub({**HUB, "signalbeam_hub_client_port": "4300"})
    assert hub.client_port == 4300
    err = _hub_error({"signalbeam_hub_http_port": 0})
    assert err.var == "signalbeam_hub_http_port"
    err = _hub_error({"signalbeam_hub_http_port": True})
    assert err.var == "signalbeam_hub_http_port"
    err = _hub_error({"signalbeam_hub_leafnode_port": 4222})
    assert err.var == "signalbeam_hub_leafnode_port"
    assert "signalbeam_hub_client_port" in err.message


def test_hub_low_port_needs_capability() -> None:
    assert validate_hub({**HUB, "signalbeam_hub_http_port": 80}).needs_bind_capability


def test_hub_replica() -> None:
    hub = validate_hub(
        {
            **HUB,
            "signalbeam_hub_replica_url": "s3://bucket/hub",
            "signalbeam_hub_replica_env": {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "S"},
        }
    )
    assert hub.replica_url == "s3://bucket/hub"
    assert "AK" not in repr(hub)  # secrets are kept out of the repr
    assert _hub_error({"signalbeam_hub_replica_url": "bucket/hub"}).var == (
        "signalbeam_hub_replica_url"
    )
    err = _hub_error(
        {"signalbeam_hub_replica_url": "s3://b/h", "signalbeam_hub_litestream": "false"}
    )
    assert err.var == "signalbeam_hub_replica_url"
    assert _hub_error({"signalbeam_hub_replica_env": ["A=1"]}).var == "signalbeam_hub_replica_env"
    err = _hub_error({"signalbeam_hub_replica_env": {"aws_key": "x"}})
    assert err.var == "signalbeam_hub_replica_env['aws_key']"
    err = _hub_error({"signalbeam_hub_replica_env": {"KEY": "a\nb"}})
    assert err.var == "signalbeam_hub_replica_env['KEY']"


def test_hub_user_and_paths() -> None:
    assert _hub_error({"signalbeam_hub_user": "root"}).var == "signalbeam_hub_user"
    assert _hub_error({"signalbeam_hub_user": "Bad User"}).var == "signalbeam_hub_user"
    for value in ("relative/dir", "/with space", "/a/../etc", "/"):
        assert _hub_error({"signalbeam_hub_data_dir": value}).var == "signalbeam_hub_data_dir"
    assert validate_hub({**HUB, "signalbeam_hub_data_dir": "/srv/hub/"}).data_dir == "/srv/hub"
    assert _hub_error({"signalbeam_hub_host": "localhost"}).var == "signalbeam_hub_host"
    assert _hub_error({"signalbeam_hub_nofile": 10}).var == "signalbeam_hub_nofile"
    err = _hub_error({"signalbeam_hub_offline_grace": 0})
    assert err.var == "signalbeam_hub_offline_grace"


def test_unknown_variable_is_refused_but_the_other_deploys_are_not() -> None:
    assert _hub_error({"signalbeam_hub_clientport": 1}).var == "signalbeam_hub_clientport"
    assert _agent_error({"signalbeam_tag": ["x"]}).var == "signalbeam_tag"
    # One `all` group may hold both deploys' variables; other prefixes are pyinfra's.
    validate_hub({**HUB, "signalbeam_engine": "docker", "ssh_user": "root"})
    validate_agent({"signalbeam_hub_http_port": 8080, "_sudo": True})


# ---------------------------------------------------------------- package


@pytest.mark.parametrize(
    "spec", ["signalbeam-edge", "signalbeam-edge==0.2.0", "signalbeam_edge[x]>=0.1,<0.3"]
)
def test_pip_spec_accepted(spec: str) -> None:
    assert validate_agent({"signalbeam_pip_spec": spec}).package.pip_spec == spec


@pytest.mark.parametrize(
    "spec", ["signalbeam-edge; rm -rf /", "a b", "-e .", "git+https://x/y", "../x"]
)
def test_pip_spec_refused(spec: str) -> None:
    assert _agent_error({"signalbeam_pip_spec": spec}).var == "signalbeam_pip_spec"


def test_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "signalbeam_edge-0.1.0-py3-none-any.whl"
    missing = _agent_error({"signalbeam_wheel": str(wheel)})
    assert missing.var == "signalbeam_wheel" and "no such file" in missing.message
    wheel.write_bytes(b"PK")
    assert validate_agent({"signalbeam_wheel": str(wheel)}).package.wheel == str(wheel)
    other = tmp_path / "package.tar.gz"
    other.write_bytes(b"x")
    assert _agent_error({"signalbeam_wheel": str(other)}).var == "signalbeam_wheel"


def test_venv_and_python() -> None:
    assert _agent_error({"signalbeam_venv": "/opt/my venv"}).var == "signalbeam_venv"
    assert _agent_error({"signalbeam_python": "python3; id"}).var == "signalbeam_python"
    assert validate_agent({"signalbeam_venv": "/srv/sb"}).package.bin == "/srv/sb/bin"


# ---------------------------------------------------------------- agent


def test_agent_defaults() -> None:
    agent = validate_agent({})
    assert agent.engine == "podman"
    assert not agent.podman_dropin
    assert agent.device_id is None and agent.tags == ()
    assert not agent.enrolls
    assert agent.credentials_file == "/var/lib/signalbeam-agent/hub-credentials.json"
    assert (agent.http_enabled, agent.http_bind, agent.http_port) == (True, "127.0.0.1", 48484)
    assert agent.config_path == "/etc/signalbeam/agent.toml"


def test_agent_engine_and_dropin() -> None:
    assert _agent_error({"signalbeam_engine": "containerd"}).var == "signalbeam_engine"
    assert validate_agent({"signalbeam_podman_dropin": "yes"}).podman_dropin
    err = _agent_error({"signalbeam_engine": "docker", "signalbeam_podman_dropin": True})
    assert err.var == "signalbeam_podman_dropin"
    assert _agent_error({"signalbeam_podman_dropin": "maybe"}).var == "signalbeam_podman_dropin"


def test_agent_device_id_and_tags() -> None:
    assert _agent_error({"signalbeam_device_id": "Pi_01"}).var == "signalbeam_device_id"
    agent = validate_agent({"signalbeam_device_id": "pi-01", "signalbeam_tags": "lab, rpi"})
    assert agent.device_id == "pi-01" and agent.tags == ("lab", "rpi")
    assert _agent_error({"signalbeam_tags": ["ok", "not ok"]}).var == "signalbeam_tags[1]"
    assert _agent_error({"signalbeam_tags": [f"t{i}" for i in range(33)]}).var == (
        "signalbeam_tags"
    )
    assert _agent_error({"signalbeam_tags": {"a": 1}}).var == "signalbeam_tags"


@pytest.mark.parametrize(
    "value", ["pi-01", "a", "a" * 63, "a" * 64, "Pi", "-pi", "pi-", "pi_1", "", "1-2"]
)
def test_device_id_rule_matches_protocol(value: str) -> None:
    assert bool(DEVICE_ID_RE.fullmatch(value)) == valid_device_id(value)


@pytest.mark.parametrize("value", ["lab", "zone:a", "a.b_c-d", "x" * 64, "x" * 65, "-a", "a b"])
def test_tag_rule_matches_protocol(value: str) -> None:
    try:
        validate_tags([value])
        protocol_ok = True
    except MessageError:
        protocol_ok = False
    assert bool(TAG_RE.match(value)) == protocol_ok


def test_enrollment_needs_hub_and_password() -> None:
    agent = validate_agent(ENROLL)
    assert agent.enrolls and agent.hub == "hub.example.com:4222"
    assert "sbt_abc_secret" not in repr(agent) and "'pw'" not in repr(agent)
    no_hub = {k: v for k, v in ENROLL.items() if k != "signalbeam_hub"}
    assert _agent_error(no_hub).var == "signalbeam_hub"
    no_pw = {k: v for k, v in ENROLL.items() if k != "signalbeam_enroll_password"}
    assert _agent_error(no_pw).var == "signalbeam_enroll_password"
    # The enroll URL `signalbeam-hub init` prints carries the password itself.
    url = {**no_pw, "signalbeam_hub": "nats://enroll:pw@hub.example.com:4222"}
    assert validate_agent(url).enroll_password is None


@pytest.mark.parametrize(
    "value", ["hub.example.com", "hub.example.com:0", "hub.example.com:99999", "http://h:1", "h :1"]
)
def test_hub_address_refused(value: str) -> None:
    assert _agent_error({"signalbeam_hub": value}).var == "signalbeam_hub"


def test_agent_hub_url_http_and_socket() -> None:
    assert _agent_error({"signalbeam_hub_url": "http://h:4222"}).var == "signalbeam_hub_url"
    assert validate_agent({"signalbeam_hub_url": "nats://h:4222"}).hub_url == "nats://h:4222"
    assert _agent_error({"signalbeam_http_bind": "0.0.0.0.0"}).var == "signalbeam_http_bind"
    assert _agent_error({"signalbeam_http_port": "http"}).var == "signalbeam_http_port"
    assert _agent_error({"signalbeam_http_enabled": 1}).var == "signalbeam_http_enabled"
    assert _agent_error({"signalbeam_engine_socket": "podman.sock"}).var == (
        "signalbeam_engine_socket"
    )
    sock = validate_agent({"signalbeam_engine_socket": "unix:///run/podman/podman.sock"})
    assert sock.engine_socket == "unix:///run/podman/podman.sock"


def test_empty_and_multiline_strings() -> None:
    assert _agent_error({"signalbeam_device_id": " "}).var == "signalbeam_device_id"
    assert _agent_error({"signalbeam_enroll_token": "a\nb"}).var == "signalbeam_enroll_token"
    assert validate_agent({"signalbeam_device_id": None}).device_id is None


def test_every_known_variable_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    missing = sorted(v for v in KNOWN_VARS if f"`{v}`" not in doc)
    assert not missing, f"docs/deploy.md does not describe {missing}"


# ---------------------------------------------------------------- leaf TLS, packaging


def test_hub_leaf_tls(tmp_path: Path) -> None:
    cert, key = cert_pair(tmp_path, "leaf", "hub.example.com")
    other_cert, other_key = cert_pair(tmp_path, "other", "hub.example.com")
    tls = {"signalbeam_hub_leaf_tls_cert": str(cert), "signalbeam_hub_leaf_tls_key": str(key)}
    hub = validate_hub({**HUB, **tls})
    assert hub.leaf_tls and hub.leaf_tls_cert == str(cert)
    assert hub.remote_leaf_key == "/var/lib/signalbeam-hub/tls/leaf-key.pem"
    assert not validate_hub(HUB).leaf_tls
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"signalbeam_hub_leaf_tls_cert": str(cert)}, "signalbeam_hub_leaf_tls_key", "required"),
        ({"signalbeam_hub_leaf_tls_key": str(key)}, "signalbeam_hub_leaf_tls_cert", "required"),
        ({**tls, "signalbeam_hub_leaf_tls_cert": str(tmp_path / "no.pem")}, "", "not found"),
        ({**tls, "signalbeam_hub_leaf_tls_cert": str(key)}, "", "not a PEM certificate"),
        ({**tls, "signalbeam_hub_leaf_tls_key": str(other_key)}, "", "matching"),
        ({**tls, "signalbeam_hub_leaf_tls_key": str(other_cert)}, "", "matching"),
    ]
    for data, var, needle in cases:
        err = _hub_error(data)
        if var:
            assert err.var == var
        else:
            assert err.var.startswith("signalbeam_hub_leaf_tls_")
        assert needle in err.message, (data, err)
    assert _hub_error({**tls, "signalbeam_hub_leaf_tls_key": str(other_key)}).var == (
        "signalbeam_hub_leaf_tls_key"
    )


def test_agent_hub_ca_file(tmp_path: Path) -> None:
    cert, key = cert_pair(tmp_path, "leaf", "hub.example.com")
    agent = validate_agent({"signalbeam_hub_ca_file": str(cert)})
    assert agent.hub_ca_file == str(cert)
    assert agent.remote_ca_file == "/etc/signalbeam/hub-ca.pem"
    assert validate_agent({}).remote_ca_file is None
    garbled = tmp_path / "garbled.pem"
    garbled.write_text("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n")
    for value, needle in (
        (str(tmp_path / "missing.pem"), "not found"),
        (str(key), "no PEM certificate"),
        (str(garbled), "not a valid PEM CA"),
        ("", "non-empty"),
    ):
        err = _agent_error({"signalbeam_hub_ca_file": value})
        assert err.var == "signalbeam_hub_ca_file" and needle in err.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, True), (True, True), (False, False), ("false", False), ("yes", True), ("0", False)],
)
def test_start_services(value: Any, expected: bool) -> None:
    data = {} if value is None else {"signalbeam_start_services": value}
    assert validate_agent(data).start_services is expected
    assert validate_hub({**HUB, **data}).start_services is expected


@pytest.mark.parametrize("value", ["maybe", 2, "", [True]])
def test_start_services_refused(value: Any) -> None:
    assert _agent_error({"signalbeam_start_services": value}).var == "signalbeam_start_services"
    assert _hub_error({"signalbeam_start_services": value}).var == "signalbeam_start_services"


def test_wheelhouse(tmp_path: Path) -> None:
    house = tmp_path / "wheels"
    err = _agent_error({"signalbeam_wheelhouse": str(house)})
    assert err.var == "signalbeam_wheelhouse" and "no such directory" in err.message
    house.mkdir()
    (house / "README.txt").write_text("not a wheel")
    (house / "bad.whl").write_bytes(b"PK")  # not a PEP 427 name
    err = _agent_error({"signalbeam_wheelhouse": str(house)})
    assert err.var == "signalbeam_wheelhouse" and "holds no wheel" in err.message
    (house / "aiohttp-3.9.5-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"PK")
    pkg = validate_agent({"signalbeam_wheelhouse": str(house)}).package
    assert pkg.wheelhouse == str(house)
    assert validate_agent({}).package.wheelhouse is None
    assert _hub_error({"signalbeam_wheelhouse": str(tmp_path / "nope")}).var == (
        "signalbeam_wheelhouse"
    )
