"""The pyinfra deploys run for real against fresh Debian 12 hosts: copies of a debootstrap
root filesystem, reached through pyinfra's ``@chroot`` connector (see
tests/harness/deploy_chroot.py).

The hub deploy goes into one root, the agent deploy into another. Each installs its Debian
packages with apt, builds the venv from this checkout's wheel and a wheelhouse (``pip
--no-index``), writes its configs and units and enables them; systemd does not run in a
chroot, so ``signalbeam_start_services=false`` (enable, never start). Then the hub is started
inside its root exactly as its unit says (ExecStart, User=), and the agent deploy enrolls
against it with a registration token passed as data, from inside the other root (a chroot
shares this machine's network). Each deploy runs twice: the second run must change nothing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hub.config import parse_toml
from tests.harness.deploy_chroot import (
    cached_wheelhouse,
    changed,
    chroot_marks,
    copy_rootfs,
    in_root,
    passwd_entry,
    project_wheel,
    run_pyinfra,
    unit_settings,
)
from tests.harness.ports import free_port
from tests.harness.procs import ManagedProcess

pytestmark = chroot_marks(1800)

BIN = Path(sys.executable).parent
VENV = "/opt/signalbeam/venv"
HUB_DATA = "/var/lib/signalbeam-hub"
AGENT_DATA = "/var/lib/signalbeam-agent"
DEVICE = "pi-chroot-01"
HARDENING = ("NoNewPrivileges", "ProtectSystem", "ProtectKernelModules", "RestrictSUIDSGID")


@dataclass
class Deployed:
    root: Path
    first: dict[str, Any]
    second: dict[str, Any]
    data: dict[str, str]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("deploy-chroot")
    yield path
    # Two Debian roots are a few hundred MB: not worth keeping in pytest's tmp history.
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def package_data(workdir: Path) -> dict[str, str]:
    return {
        "signalbeam_wheel": str(project_wheel(workdir / "wheel")),
        "signalbeam_wheelhouse": str(cached_wheelhouse(workdir)),
        "signalbeam_start_services": "false",
    }


@pytest.fixture(scope="module")
def hub(workdir: Path, package_data: dict[str, str]) -> Deployed:
    root = copy_rootfs(workdir / "hub-root")
    data = {
        **package_data,
        "signalbeam_hub_public_host": "127.0.0.1",
        "signalbeam_hub_host": "127.0.0.1",
        "signalbeam_hub_http_host": "127.0.0.1",
        "signalbeam_hub_client_port": str(free_port()),
        "signalbeam_hub_leafnode_port": str(free_port()),
        "signalbeam_hub_monitor_port": str(free_port()),
        "signalbeam_hub_http_port": str(free_port()),
    }
    first = run_pyinfra(root, "hub.py", data)
    second = run_pyinfra(root, "hub.py", data)
    return Deployed(root, first, second, data)


@pytest.fixture(scope="module")
def operator_env(hub: Deployed, workdir: Path) -> Iterator[dict[str, str]]:
    """The deployed hub running inside its root, started the way its unit starts it."""
    unit = unit_settings((hub.root / "etc/systemd/system/signalbeam-hub.service").read_text())
    user = unit["User"]
    proc = ManagedProcess(
        "chroot-hub",
        [
            "chroot",
            f"--userspec={user}:{unit['Group']}",
            str(hub.root),
            *shlex.split(unit["ExecStart"]),
        ],
        workdir / "hub.log",
        env={"HOME": HUB_DATA},
    )
    ready = f"http://127.0.0.1:{hub.data['signalbeam_hub_http_port']}/health/ready"

    def is_ready() -> bool:
        with urllib.request.urlopen(ready, timeout=2) as resp:
            return bool(resp.status == 200)

    try:
        proc.wait_ready(is_ready, timeout=60)
        init = (hub.root / "root/signalbeam-hub-init.txt").read_text()
        env = {
            "SIGNALBEAM_HUB": _grab(r"SIGNALBEAM_HUB='([^']+)'", init),
            "SIGNALBEAM_API_KEY": _grab(r"SIGNALBEAM_API_KEY='([^']+)'", init),
            "ENROLL_URL": _grab(r"^\s*(nats://enroll:\S+)$", init),
        }
        yield env
    finally:
        proc.stop(timeout=20)


@pytest.fixture(scope="module")
def agent(
    workdir: Path, package_data: dict[str, str], hub: Deployed, operator_env: dict[str, str]
) -> Deployed:
    token = _cli(operator_env, "token", "create", "--tenant", "lab", "--expires", "1h")["token"]
    password = re.sub(r"^nats://enroll:([^@]+)@.*$", r"\1", operator_env["ENROLL_URL"])
    root = copy_rootfs(workdir / "agent-root")
    data = {
        **package_data,
        "signalbeam_engine": "podman",
        "signalbeam_podman_dropin": "true",
        "signalbeam_device_id": DEVICE,
        "signalbeam_tags": "lab,rpi",
        "signalbeam_hub": f"127.0.0.1:{hub.data['signalbeam_hub_client_port']}",
        "signalbeam_enroll_token": token,
        "signalbeam_enroll_password": password,
        "signalbeam_http_port": str(free_port()),
    }
    first = run_pyinfra(root, "agent.py", data)
    second = run_pyinfra(root, "agent.py", data)
    return Deployed(root, first, second, data)


def _grab(pattern: str, text: str) -> str:
    m = re.search(pattern, text, re.MULTILINE)
    assert m, f"{pattern!r} not in the hub's init output"
    return m.group(1)


def _cli(env: dict[str, str], *args: str) -> Any:
    res = subprocess.run(
        [str(BIN / "signalbeam"), "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _mode_owner(path: Path) -> tuple[int, int]:
    st = path.stat()
    return stat.S_IMODE(st.st_mode), st.st_uid


def _enabled(root: Path, target: str, unit: str) -> bool:
    link = root / "etc/systemd/system" / f"{target}.wants" / unit
    return link.is_symlink()


def _assert_runs(root: Path, *argv: str) -> None:
    res = in_root(root, *argv)
    assert res.returncode == 0, f"{argv}: {res.stdout}{res.stderr}"


def _verify_unit(root: Path, unit: str) -> None:
    """``systemd-analyze verify`` inside the root: ExecStart must exist there, User= too."""
    res = in_root(root, "systemd-analyze", "verify", f"/etc/systemd/system/{unit}")
    warnings = [
        line
        for line in (res.stdout + res.stderr).splitlines()
        if unit in line or "ExecStart" in line
    ]
    assert res.returncode == 0 and not warnings, res.stdout + res.stderr


# ---------------------------------------------------------------- hub


def test_hub_deploy_changes_the_host_then_nothing(hub: Deployed) -> None:
    first = changed(hub.first)
    for step in (
        "Install Python 3 and venv support",
        "Create system user signalbeam",
        "Initialise the hub",
        "Write hub.toml",
        "Write signalbeam-hub.service",
        "Enable signalbeam-hub.service",
    ):
        assert any(step in name for name in first), f"{step!r} not among {first}"
    assert not any("start" in name.lower() and "not started" not in name for name in first)
    assert changed(hub.second) == []


def test_hub_files_user_and_unit(hub: Deployed) -> None:
    root = hub.root
    entry = passwd_entry(root, "signalbeam")
    assert entry is not None
    uid = int(entry[2])
    assert uid < 1000 and entry[5] == HUB_DATA and entry[6] == "/usr/sbin/nologin"

    assert _mode_owner(root / HUB_DATA.lstrip("/")) == (0o700, uid)
    toml = root / HUB_DATA.lstrip("/") / "hub.toml"
    assert _mode_owner(toml) == (0o600, uid)
    cfg = parse_toml(toml.read_text())
    assert cfg.client_port == int(hub.data["signalbeam_hub_client_port"])
    assert cfg.public_host == "127.0.0.1"
    init = root / "root/signalbeam-hub-init.txt"
    assert _mode_owner(init) == (0o600, 0)
    assert "sbk_" in init.read_text()
    assert not (root / "etc/signalbeam/hub.env").exists()

    unit_text = (root / "etc/systemd/system/signalbeam-hub.service").read_text()
    unit = unit_settings(unit_text)
    assert unit["Restart"] == "always" and unit["User"] == "signalbeam"
    assert unit["ExecStart"] == f"{VENV}/bin/signalbeam-hub --log-format json run --data {HUB_DATA}"
    for key in HARDENING:
        assert key in unit, f"{key} missing from the hub unit"
    assert unit["ProtectSystem"] == "strict" and unit["ReadWritePaths"] == HUB_DATA
    assert _enabled(root, "multi-user.target", "signalbeam-hub.service")
    _verify_unit(root, "signalbeam-hub.service")


def test_hub_venv_runs_inside_the_host(hub: Deployed) -> None:
    for script in ("signalbeam-hub", "signalbeam-agent", "signalbeam"):
        _assert_runs(hub.root, f"{VENV}/bin/{script}", "--help")
    _assert_runs(hub.root, f"{VENV}/bin/nats-server", "--version")
    _assert_runs(hub.root, f"{VENV}/bin/litestream", "version")


# ---------------------------------------------------------------- agent


def test_agent_deploy_enrolls_then_changes_nothing(
    agent: Deployed, operator_env: dict[str, str]
) -> None:
    first = changed(agent.first)
    for step in (
        "Install the container engine (podman)",
        "Podman drop-in",
        "Write /etc/signalbeam/agent.toml",
        "Enroll with the hub",
        "Enable podman.socket",
        "Enable signalbeam-agent.service",
    ):
        assert any(step in name for name in first), f"{step!r} not among {first}"
    assert changed(agent.second) == []
    # The secrets were data: masked in pyinfra's output, on no file of the host.
    token = agent.data["signalbeam_enroll_token"]
    for doc in (agent.first, agent.second):
        assert token not in json.dumps(doc)
    creds = agent.root / AGENT_DATA.lstrip("/") / "hub-credentials.json"
    assert _mode_owner(creds) == (0o600, 0)
    for path in (creds, agent.root / "etc/signalbeam/agent.toml"):
        assert token not in path.read_text()

    show = _cli(operator_env, "device", "show", DEVICE)
    assert show.get("id", DEVICE) == DEVICE
    assert {"lab", "rpi"} <= set(show.get("tags") or [])


def test_agent_files_and_units(agent: Deployed) -> None:
    root = agent.root
    assert _mode_owner(root / AGENT_DATA.lstrip("/")) == (0o700, 0)
    config = (root / "etc/signalbeam/agent.toml").read_text()
    assert f'device_id = "{DEVICE}"' in config and 'engine = "podman"' in config
    assert (root / "etc/containers/containers.conf.d/50-signalbeam.conf").is_file()
    unit = unit_settings((root / "etc/systemd/system/signalbeam-agent.service").read_text())
    assert unit["Restart"] == "always"
    assert unit["ExecStart"].startswith(f"{VENV}/bin/signalbeam-agent run --config ")
    for key in HARDENING:
        assert key in unit, f"{key} missing from the agent unit"
    assert unit["ReadWritePaths"] == AGENT_DATA
    assert _enabled(root, "multi-user.target", "signalbeam-agent.service")
    assert _enabled(root, "sockets.target", "podman.socket")
    _verify_unit(root, "signalbeam-agent.service")
    _assert_runs(root, f"{VENV}/bin/signalbeam-agent", "--help")
    _assert_runs(root, "podman", "--version")
