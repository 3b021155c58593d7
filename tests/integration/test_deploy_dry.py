"""The pyinfra deploys, planned for real against this machine with ``pyinfra @local ... --dry``:
data validated, facts gathered, operations planned -- nothing executed.

This machine runs no systemd (PID 1 is not systemd), so systemctl cannot answer the
``systemd.service`` facts. A stand-in ``systemctl`` on PATH answers ``show`` with nothing,
as a systemd host answers for units that do not exist yet; everything else is real.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.deploy_dry import PYINFRA, ROOT, dry_env, index, planned, pyinfra_dry

TOKEN = "sbt_abc123_TOKENSECRET"
PASSWORD = "PASSWORDSECRET"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return dry_env(tmp_path)


def test_hub_plan(env: dict[str, str], tmp_path: Path) -> None:
    data = {
        "signalbeam_hub_public_host": "hub.example.com",
        "signalbeam_hub_replica_url": "s3://bucket/hub",
    }
    # From another working directory: the deploy finds its own helpers.
    names = planned(pyinfra_dry(env, "hub.py", data, cwd=tmp_path))
    order = [
        "Install signalbeam-edge into /opt/signalbeam/venv",
        "Create system user signalbeam",
        "Create the hub data dir /var/lib/signalbeam-hub",
        "Initialise the hub (once; admin key into /root/signalbeam-hub-init.txt)",
        "Say where the admin key is",
        "Write hub.toml",
        "Write signalbeam-hub.service",
        "Reload systemd units",
        "Enable and start signalbeam-hub.service",
    ]
    positions = [index(names, op) for op in order]
    assert positions == sorted(positions), names
    # -y skips change detection; the deploy must still load and plan without error.
    quick = pyinfra_dry(env, "hub.py", data, "-y")
    assert quick.returncode == 0, quick.stdout + quick.stderr


def test_hub_plan_with_workers(env: dict[str, str], tmp_path: Path) -> None:
    data = {"signalbeam_hub_public_host": "hub.example.com", "signalbeam_hub_workers": "2"}
    names = planned(pyinfra_dry(env, "hub.py", data, cwd=tmp_path))
    order = [
        "Write hub.toml",
        "Write signalbeam-hub.service",
        "Enable and start signalbeam-hub.service",
        "Write signalbeam-hub-worker@.service",
        "Enable and start signalbeam-hub-worker@0.service",
        "Enable and start signalbeam-hub-worker@1.service",
    ]
    positions = [index(names, op) for op in order]
    assert positions == sorted(positions), names


def test_hub_plan_with_replica_credentials(env: dict[str, str], tmp_path: Path) -> None:
    # A dict cannot be passed with --data; an inventory file can carry it.
    inventory = tmp_path / "inventory.py"
    inventory.write_text(
        "hubs = [('@local', {'signalbeam_hub_public_host': 'hub.example.com',"
        " 'signalbeam_hub_replica_url': 's3://bucket/hub',"
        " 'signalbeam_hub_replica_env': {'AWS_SECRET_ACCESS_KEY': 'REPLICASECRET'}})]\n"
    )
    res = subprocess.run(
        [PYINFRA, str(inventory), str(ROOT / "deploy" / "hub.py"), "--dry", "-vv"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    names = planned(res)
    assert index(names, "Write /etc/signalbeam/hub.env") < index(names, "Enable and start")
    assert "REPLICASECRET" not in res.stdout + res.stderr


def test_agent_plan_enrolls_once_and_masks_secrets(env: dict[str, str]) -> None:
    data = {
        "signalbeam_device_id": "pi-01",
        "signalbeam_tags": "lab,rpi",
        "signalbeam_hub": "hub.example.com:4222",
        "signalbeam_enroll_token": TOKEN,
        "signalbeam_enroll_password": PASSWORD,
    }
    res = pyinfra_dry(env, "agent.py", data, "-vv")
    names = planned(res)
    order = [
        "Install the container engine (podman)",
        "Enable and start podman.socket",
        "Install signalbeam-edge into /opt/signalbeam/venv",
        "Write /etc/signalbeam/agent.toml",
        "Enroll with the hub (once; token masked)",
        "Write signalbeam-agent.service",
        "Enable and start signalbeam-agent.service",
    ]
    positions = [index(names, op) for op in order]
    assert positions == sorted(positions), names
    out = res.stdout + res.stderr
    assert TOKEN not in out and PASSWORD not in out
    # Opt-in only: without it the deploy removes a drop-in an earlier run may have written.
    assert index(names, "No Podman drop-in: remove") >= 0
    quick = pyinfra_dry(env, "agent.py", data, "-y")
    assert quick.returncode == 0, quick.stdout + quick.stderr


def test_agent_plan_docker_with_wheel_and_no_token(env: dict[str, str], tmp_path: Path) -> None:
    wheel = tmp_path / "signalbeam_edge-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    res = pyinfra_dry(
        env, "agent.py", {"signalbeam_engine": "docker", "signalbeam_wheel": str(wheel)}
    )
    names = planned(res)
    assert index(names, "Install the container engine (docker)") < index(
        names, "Enable and start docker.service"
    )
    assert index(names, f"Upload {wheel.name}") < index(names, f"Install {wheel.name}")
    assert not any("Enroll" in n for n in names)
    assert "runs in local mode" in res.stdout + res.stderr


def test_agent_plan_with_podman_dropin(env: dict[str, str]) -> None:
    names = planned(pyinfra_dry(env, "agent.py", {"signalbeam_podman_dropin": "true"}))
    assert index(names, "Podman drop-in") < index(names, "Enable and start podman.socket")


def test_bad_data_stops_before_planning(env: dict[str, str]) -> None:
    res = pyinfra_dry(env, "agent.py", {"signalbeam_engine": "lxc"})
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "signalbeam_engine: must be 'podman' or 'docker'" in out
    assert "Detected changes" not in out
    res = pyinfra_dry(env, "hub.py", {})  # @local is no address for devices
    assert res.returncode != 0
    assert "signalbeam_hub_public_host: is required" in res.stdout + res.stderr


def test_example_inventory_validates(env: dict[str, str]) -> None:
    # In a subprocess: importing pyinfra_cli monkey-patches the interpreter with gevent.
    script = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory_from_files
from deploy.validate import validate_agent, validate_hub
with ctx_state.use(State()):
    inv = make_inventory_from_files(
        sys.argv[1] + "/deploy/inventory.example.py", cwd=sys.argv[1]
    )
out = {"hubs": [], "devices": []}
for h in inv.get_group("hubs"):
    out["hubs"].append(validate_hub(h.data.dict(), inventory_name=h.name).public_host)
for h in inv.get_group("devices"):
    a = validate_agent(h.data.dict())
    out["devices"].append([a.device_id, list(a.tags), a.hub, a.engine])
print(json.dumps(out))
"""
    res = subprocess.run(
        [sys.executable, "-c", script, str(ROOT)],
        capture_output=True,
        text=True,
        env={**env, "SB_ENROLL_TOKEN": "sbt_x_y", "SB_ENROLL_PASSWORD": "pw"},
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["hubs"] == ["hub.example.com"]
    assert len(out["devices"]) == 2
    for device_id, tags, hub, engine in out["devices"]:
        assert device_id.startswith("pi-") and "rpi" in tags
        assert hub == "hub.example.com:4222" and engine == "podman"


def _running_systemctl(env: dict[str, str], tmp_path: Path, unit: str) -> dict[str, str]:
    """A stand-in systemctl for a host where ``unit`` already runs, enabled."""
    fakebin = tmp_path / "fakebin-running"
    fakebin.mkdir()
    stub = fakebin / "systemctl"
    stub.write_text(
        f"#!/bin/sh\nprintf 'Id={unit}\\nSubState=running\\nUnitFileState=enabled\\n'\n"
    )
    stub.chmod(0o755)
    return {**env, "PATH": f"{fakebin}:{env['PATH']}"}


def test_hub_plan_on_an_initialised_running_hub(env: dict[str, str], tmp_path: Path) -> None:
    data_dir = tmp_path / "hub-data"
    data_dir.mkdir()
    (data_dir / "hub.toml").write_text("client_port = 4222\n")
    res = pyinfra_dry(
        _running_systemctl(env, tmp_path, "signalbeam-hub.service"),
        "hub.py",
        {"signalbeam_hub_public_host": "hub.example.com", "signalbeam_hub_data_dir": str(data_dir)},
        "-v",  # noop notes are printed from -v on
    )
    names = planned(res)
    assert not any("Initialise the hub" in n for n in names), names
    assert "hub already initialised" in res.stdout + res.stderr
    # Running already: restarted only if something it reads changed (a conditional change).
    assert index(names, "Write hub.toml") < index(names, "Restart signalbeam-hub.service")


def test_agent_plan_on_an_enrolled_device(env: dict[str, str], tmp_path: Path) -> None:
    data_dir = tmp_path / "agent-data"
    data_dir.mkdir()
    (data_dir / "hub-credentials.json").write_text("{}")
    res = pyinfra_dry(
        _running_systemctl(env, tmp_path, "signalbeam-agent.service"),
        "agent.py",
        {
            "signalbeam_agent_data_dir": str(data_dir),
            "signalbeam_hub": "hub.example.com:4222",
            "signalbeam_enroll_token": TOKEN,
            "signalbeam_enroll_password": PASSWORD,
        },
        "-v",
    )
    names = planned(res)
    assert not any("Enroll" in n for n in names), names
    assert "already enrolled" in res.stdout + res.stderr
    assert index(names, "Write /etc/signalbeam/agent.toml") < index(
        names, "Restart signalbeam-agent.service"
    )
