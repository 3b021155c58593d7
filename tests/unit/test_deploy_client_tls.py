"""The deploys and TLS on the hub's client port: the client cert/key variables (validated
like the leaf pair), hub.toml pointing at the uploaded files, init told about them (so it
prints tls:// URLs), and the agent enrolling over tls://."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy.commands import enroll_command, init_command
from deploy.fields import DeployDataError
from deploy.render import hub_context, render
from deploy.validate import validate_agent, validate_hub
from hub.config import parse_toml
from tests.harness.tls import cert_pair

HUB = {"signalbeam_hub_public_host": "hub.example.com"}


def _tls(cert: Path, key: Path, listener: str = "client") -> dict[str, str]:
    return {
        f"signalbeam_hub_{listener}_tls_cert": str(cert),
        f"signalbeam_hub_{listener}_tls_key": str(key),
    }


def test_client_tls_pair_is_validated_naming_the_variable(tmp_path: Path) -> None:
    cert, key = cert_pair(tmp_path, "hub", "hub.example.com")
    _, other_key = cert_pair(tmp_path, "other", "hub.example.com")
    hub = validate_hub({**HUB, **_tls(cert, key)})
    assert hub.client_tls and not hub.leaf_tls
    assert hub.remote_client_cert == "/var/lib/signalbeam-hub/tls/client-cert.pem"
    assert not validate_hub(HUB).client_tls
    cases: list[tuple[dict[str, Any], str, str]] = [
        (
            {"signalbeam_hub_client_tls_cert": str(cert)},
            "signalbeam_hub_client_tls_key",
            "required",
        ),
        ({"signalbeam_hub_client_tls_key": str(key)}, "signalbeam_hub_client_tls_cert", "required"),
        (_tls(tmp_path / "no.pem", key), "signalbeam_hub_client_tls_cert", "not found"),
        (_tls(key, key), "signalbeam_hub_client_tls_cert", "not a PEM certificate"),
        (_tls(cert, other_key), "signalbeam_hub_client_tls_key", "matching"),
    ]
    for data, var, needle in cases:
        with pytest.raises(DeployDataError) as err:
            validate_hub({**HUB, **data})
        assert err.value.var == var and needle in err.value.message, (data, err.value)


def test_hub_toml_and_init_use_the_uploaded_files(tmp_path: Path) -> None:
    cert, key = cert_pair(tmp_path, "hub", "hub.example.com")
    # One certificate for both listeners: the usual setup.
    hub = validate_hub({**HUB, **_tls(cert, key), **_tls(cert, key, "leaf")})
    cfg = parse_toml(render("hub.toml.j2", **hub_context(hub)))
    assert cfg.client_tls_cert == "/var/lib/signalbeam-hub/tls/client-cert.pem"
    assert cfg.client_tls_key == "/var/lib/signalbeam-hub/tls/client-key.pem"
    assert cfg.leaf_tls_cert == "/var/lib/signalbeam-hub/tls/leaf-cert.pem"
    assert not parse_toml(render("hub.toml.j2", **hub_context(validate_hub(HUB)))).client_tls
    raw = init_command(hub).get_raw_value()
    assert "--client-tls-cert /var/lib/signalbeam-hub/tls/client-cert.pem" in raw
    assert "--client-tls-key /var/lib/signalbeam-hub/tls/client-key.pem" in raw
    assert "--leaf-tls-cert /var/lib/signalbeam-hub/tls/leaf-cert.pem" in raw
    assert "--client-tls" not in init_command(validate_hub(HUB)).get_raw_value()


def test_agent_enrolls_over_tls_urls(tmp_path: Path) -> None:
    cert, _ = cert_pair(tmp_path, "hub", "hub.example.com")
    base = {"signalbeam_enroll_token": "sbt_x", "signalbeam_hub_ca_file": str(cert)}
    agent = validate_agent({**base, "signalbeam_hub": "tls://enroll:pw@hub.example.com:4222"})
    assert agent.enroll_password is None  # in the URL
    shown = str(enroll_command(agent))
    assert "pw@" not in shown  # the URL holds a password: masked
    assert "tls://enroll:pw@hub.example.com:4222" in enroll_command(agent).get_raw_value()
    plain = validate_agent(
        {**base, "signalbeam_hub": "tls://hub.example.com:4222", "signalbeam_enroll_password": "p"}
    )
    assert "--hub tls://hub.example.com:4222" in enroll_command(plain).get_raw_value()
    with pytest.raises(DeployDataError) as err:
        validate_agent({**base, "signalbeam_hub": "tls://hub.example.com:4222"})
    assert err.value.var == "signalbeam_enroll_password"
    with pytest.raises(DeployDataError) as err:
        validate_agent({**base, "signalbeam_hub": "wss://hub.example.com:4222"})
    assert err.value.var == "signalbeam_hub"
