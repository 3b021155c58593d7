"""deploy/templates: rendered with sample data, then checked by what reads them on a host --
systemd (``systemd-analyze verify`` when present, an INI parse always), ``hub.config`` for
hub.toml, ``agent.config`` for agent.toml.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from deploy.fields import DeployDataError
from deploy.render import agent_context, hub_context, render
from deploy.settings import AgentSettings, HubSettings
from deploy.validate import validate_agent, validate_hub
from hub.config import HubConfig, parse_toml
from tests.harness.tls import cert_pair

ROOT = Path(__file__).resolve().parents[2]
# The unit files name executables under the venv; this test venv has the same ones, so
# `systemd-analyze verify` can check ExecStart too.
VENV = str(Path(sys.executable).parent.parent)


def _hub(**data: Any) -> HubSettings:
    return validate_hub(
        {"signalbeam_venv": VENV, "signalbeam_hub_public_host": "hub.example.com", **data}
    )


def _agent(**data: Any) -> AgentSettings:
    return validate_agent({"signalbeam_venv": VENV, **data})


def _unit(text: str) -> configparser.ConfigParser:
    # systemd unit syntax is INI with case-sensitive keys; strict: no key twice per section.
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def _verify(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    if shutil.which("systemd-analyze") is None:
        return
    res = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    # verify exits 0 on unknown keys and bad values, printing a line for each.
    problems = [
        line
        for line in out.splitlines()
        if re.search(r"Unknown|Invalid|Failed|not executable|ignoring|Ignoring|not safe", line)
        and name in line
    ]
    assert not problems, out


def test_hub_unit(tmp_path: Path) -> None:
    hub = _hub()
    text = render("signalbeam-hub.service.j2", **hub_context(hub))
    _verify(tmp_path, "signalbeam-hub.service", text)
    unit = _unit(text)
    svc = unit["Service"]
    assert svc["ExecStart"] == (
        f"{VENV}/bin/signalbeam-hub --log-format json run --data /var/lib/signalbeam-hub"
    )
    assert svc["User"] == svc["Group"] == "signalbeam"
    assert svc["Restart"] == "always"
    assert svc["NoNewPrivileges"] == "yes"
    assert svc["ProtectSystem"] == "strict"
    assert svc["ReadWritePaths"] == "/var/lib/signalbeam-hub"
    assert svc["EnvironmentFile"] == "-/etc/signalbeam/hub.env"
    assert svc["CapabilityBoundingSet"] == ""
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_hub_unit_low_port_gets_only_bind_capability(tmp_path: Path) -> None:
    text = render(
        "signalbeam-hub.service.j2",
        **hub_context(_hub(signalbeam_hub_http_port=80, signalbeam_hub_data_dir="/srv/hub")),
    )
    _verify(tmp_path, "signalbeam-hub.service", text)
    svc = _unit(text)["Service"]
    assert svc["CapabilityBoundingSet"] == svc["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert svc["ReadWritePaths"] == "/srv/hub"
    assert svc["ExecStart"].endswith(" run --data /srv/hub")


@pytest.mark.parametrize(
    "engine,after", [("podman", "podman.socket"), ("docker", "docker.service")]
)
def test_agent_unit(tmp_path: Path, engine: str, after: str) -> None:
    agent = _agent(signalbeam_engine=engine)
    text = render("signalbeam-agent.service.j2", **agent_context(agent))
    _verify(tmp_path, "signalbeam-agent.service", text)
    unit = _unit(text)
    assert after in unit["Unit"]["After"].split() and after in unit["Unit"]["Wants"].split()
    svc = unit["Service"]
    assert "User" not in svc  # root, on purpose: the engine socket is root's
    assert svc["ExecStart"] == (
        f"{VENV}/bin/signalbeam-agent run --config /etc/signalbeam/agent.toml --log-format json"
    )
    assert svc["Restart"] == "always"
    assert svc["ProtectSystem"] == "strict"
    assert svc["ReadWritePaths"] == "/var/lib/signalbeam-agent"
    # /run/signalbeam/locks (the update lock directory) is writable and outlives a restart
    assert (svc["RuntimeDirectory"], svc["RuntimeDirectoryPreserve"]) == ("signalbeam", "yes")


def test_hub_toml_is_accepted_by_the_hub() -> None:
    hub = _hub(
        signalbeam_hub_client_port=4300,
        signalbeam_hub_http_host="127.0.0.1",
        signalbeam_hub_public_host="10.1.2.3",
        signalbeam_hub_offline_grace=120,
        signalbeam_hub_replica_url='s3://bucket/hub?endpoint=http://minio:9000&x="y"',
    )
    cfg = parse_toml(render("hub.toml.j2", **hub_context(hub)), "hub.toml")
    assert cfg == HubConfig(
        client_port=4300,
        http_host="127.0.0.1",
        public_host="10.1.2.3",
        offline_grace=120,
        replica_url='s3://bucket/hub?endpoint=http://minio:9000&x="y"',
        nats_auth="jwt",  # a new hub: init's defaults
        require_signed_bundles=True,
    )
    off = parse_toml(render("hub.toml.j2", **hub_context(_hub(signalbeam_hub_litestream=False))))
    assert off.litestream is False and off.replica_url == ""


def test_hub_env_file_quoting() -> None:
    hub = _hub(
        signalbeam_hub_replica_env={"AWS_SECRET_ACCESS_KEY": 'a"b\\c$d', "AWS_ACCESS_KEY_ID": "AK"}
    )
    lines = [
        line
        for line in render("hub.env.j2", **hub_context(hub)).splitlines()
        if line and not line.startswith("#")
    ]
    assert lines == ['AWS_ACCESS_KEY_ID="AK"', 'AWS_SECRET_ACCESS_KEY="a\\"b\\\\c$d"']


def test_agent_toml_is_accepted_by_the_agent(tmp_path: Path) -> None:
    agent = _agent(
        signalbeam_device_id="pi-01",
        signalbeam_engine="docker",
        signalbeam_engine_socket="unix:///var/run/docker.sock",
        signalbeam_http_bind="192.168.1.20",
        signalbeam_http_port=8443,
        signalbeam_hub_url="nats://hub.example.com:4222",
        signalbeam_agent_data_dir="/srv/agent",
    )
    path = tmp_path / "agent.toml"
    path.write_text(render("agent.toml.j2", **agent_context(agent)))
    cfg = load_config(path)
    assert cfg.device_id == "pi-01" and cfg.device_id_configured
    assert cfg.engine == "docker"
    assert cfg.engine_socket == "unix:///var/run/docker.sock"
    assert str(cfg.data_dir) == "/srv/agent"
    assert (cfg.http.enabled, cfg.http.bind, cfg.http.port) == (True, "192.168.1.20", 8443)
    assert cfg.hub.url == "nats://hub.example.com:4222"
    assert cfg.hub.credentials_file is None  # the default, where enroll writes and the guard looks


def test_agent_toml_minimal_leaves_device_id_to_the_host(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(render("agent.toml.j2", **agent_context(_agent(signalbeam_http_enabled=False))))
    cfg = load_config(path)
    assert not cfg.device_id_configured
    assert cfg.engine == "podman" and cfg.engine_socket is None
    assert cfg.http.enabled is False
    assert cfg.hub.url is None  # leaf mode, the default once enrolled
    assert str(cfg.data_dir) == "/var/lib/signalbeam-agent"


def test_podman_dropin_matches_the_dev_script() -> None:
    """The opt-in drop-in must say what deploy/dev/system-deps.sh writes for CI."""
    script = (ROOT / "deploy" / "dev" / "system-deps.sh").read_text()
    m = re.search(r"DROPIN_CONTENT='(.*?)'", script, re.S)
    assert m, "DROPIN_CONTENT not found in system-deps.sh"
    ours = tomllib.loads(render("podman-signalbeam.conf.j2"))
    assert ours == tomllib.loads(m.group(1))


def test_hub_toml_with_leaf_tls_points_at_the_uploaded_files(tmp_path: Path) -> None:
    cert, key = cert_pair(tmp_path, "leaf", "hub.example.com")
    hub = _hub(signalbeam_hub_leaf_tls_cert=str(cert), signalbeam_hub_leaf_tls_key=str(key))
    cfg = parse_toml(render("hub.toml.j2", **hub_context(hub)))
    assert cfg.leaf_tls_cert == "/var/lib/signalbeam-hub/tls/leaf-cert.pem"
    assert cfg.leaf_tls_key == "/var/lib/signalbeam-hub/tls/leaf-key.pem"
    plain = parse_toml(render("hub.toml.j2", **hub_context(_hub())))
    assert not plain.leaf_tls


def test_agent_toml_with_hub_ca_pins_the_uploaded_ca(tmp_path: Path) -> None:
    from agent.config import config_from_dict

    cert, _ = cert_pair(tmp_path, "leaf", "hub.example.com")
    agent = _agent(signalbeam_hub_ca_file=str(cert))
    doc = tomllib.loads(render("agent.toml.j2", **agent_context(agent)))
    assert doc["hub"] == {"ca_file": "/etc/signalbeam/hub-ca.pem"}
    # The rest of the file is what the agent accepts (the CA itself exists only on a device).
    doc["hub"]["ca_file"] = str(cert)
    assert config_from_dict(doc).hub.ca_file == str(cert)
    both = _agent(signalbeam_hub_ca_file=str(cert), signalbeam_hub_url="tls://hub:4222")
    doc = tomllib.loads(render("agent.toml.j2", **agent_context(both)))
    assert doc["hub"] == {"url": "tls://hub:4222", "ca_file": "/etc/signalbeam/hub-ca.pem"}


def test_hub_workers_units(tmp_path: Path) -> None:
    hub = _hub(signalbeam_hub_workers=3)
    main = _unit(render("signalbeam-hub.service.j2", **hub_context(hub)))["Service"]
    assert main["ExecStart"].endswith(" nats --data /var/lib/signalbeam-hub")
    text = render("signalbeam-hub-worker@.service.j2", **hub_context(hub))
    _verify(tmp_path, "signalbeam-hub-worker@.service", text)
    svc = _unit(text)["Service"]
    assert svc["ExecStart"].endswith(" run --data /var/lib/signalbeam-hub --worker %i")
    assert svc["ProtectSystem"] == "strict" and svc["Restart"] == "always"
    assert parse_toml(render("hub.toml.j2", **hub_context(hub))).workers == 3


def test_hub_cluster_hosts_render_a_node_0_config() -> None:
    hosts = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    hub = _hub(signalbeam_hub_cluster_hosts=hosts, signalbeam_hub_cluster_port=6300)
    cfg = parse_toml(render("hub.toml.j2", **hub_context(hub)))
    assert cfg.jwt_auth
    assert cfg.cluster_hosts == tuple(hosts) and cfg.cluster_local == (0,)
    assert cfg.cluster_port == 6300
    assert parse_toml(render("hub.toml.j2", **hub_context(_hub()))).cluster_hosts == ()
    for bad in (["a", "b"], ["a", "a", "b"], "a,b,c", ["a", "b", "bad host"]):
        with pytest.raises(DeployDataError) as e:
            _hub(signalbeam_hub_cluster_hosts=bad)
        assert e.value.var.startswith("signalbeam_hub_cluster_hosts"), bad
    with pytest.raises(DeployDataError):
        _hub(signalbeam_hub_cluster_hosts=hosts, signalbeam_hub_cluster_port=4222)


def test_a_redeploy_keeps_the_hubs_login_mode_and_signature_rule() -> None:
    from deploy.render import settle_modes

    def toml(hub: HubSettings, existing: list[str] | None) -> HubConfig:
        return parse_toml(render("hub.toml.j2", **hub_context(settle_modes(hub, existing))))

    new = toml(_hub(), None)
    assert (new.nats_auth, new.require_signed_bundles) == ("jwt", True)
    # A hub deployed before issue 16: its hub.toml has neither key. A redeploy must not
    # switch it to JWT logins under devices that still log in with passwords.
    old = toml(_hub(), [])
    assert (old.nats_auth, old.require_signed_bundles) == ("password", False)
    kept = toml(_hub(), ['nats_auth = "jwt"', "require_signed_bundles = false"])
    assert (kept.nats_auth, kept.require_signed_bundles) == ("jwt", False)
    chosen = toml(
        _hub(signalbeam_hub_nats_auth="jwt", signalbeam_hub_require_signed_bundles="yes"), []
    )
    assert (chosen.nats_auth, chosen.require_signed_bundles) == ("jwt", True)
    with pytest.raises(DeployDataError) as e:
        _hub(signalbeam_hub_nats_auth="ldap")
    assert e.value.var == "signalbeam_hub_nats_auth"


def test_init_command_carries_the_modes() -> None:
    from deploy.commands import init_command
    from deploy.render import settle_modes

    argv = str(init_command(settle_modes(_hub(signalbeam_hub_require_signed_bundles=False), None)))
    assert "--nats-auth jwt" in argv and "--allow-unsigned-bundles" in argv
