"""The hub deploy with TLS on both listeners, planned for real (``pyinfra @local --dry``, as
test_deploy_dry): the certificate and key uploads come before init, which is told about
them (so it checks them and prints tls:// URLs), and before hub.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.tls import self_signed
from tests.harness.deploy_dry import dry_env, index, planned, pyinfra_dry


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return dry_env(tmp_path)


def test_hub_plan_uploads_the_tls_files_before_init(env: dict[str, str], tmp_path: Path) -> None:
    cert, key = tmp_path / "hub-cert.pem", tmp_path / "hub-key.pem"
    self_signed(cert, key, "hub.example.com")
    data = {"signalbeam_hub_public_host": "hub.example.com"}
    for listener in ("leaf", "client"):
        data[f"signalbeam_hub_{listener}_tls_cert"] = str(cert)
        data[f"signalbeam_hub_{listener}_tls_key"] = str(key)
    names = planned(pyinfra_dry(env, "hub.py", data))
    order = [
        "Create the hub data dir /var/lib/signalbeam-hub",
        "Upload the leaf TLS certificate to /var/lib/signalbeam-hub/tls/leaf-cert.pem",
        "Upload the client TLS key to /var/lib/signalbeam-hub/tls/client-key.pem",
        "Initialise the hub (once; admin key into /root/signalbeam-hub-init.txt)",
        "Write hub.toml",
        "Enable and start signalbeam-hub.service",
    ]
    positions = [index(names, op) for op in order]
    assert positions == sorted(positions), names
