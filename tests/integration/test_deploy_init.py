"""The hub deploy's init step run for real: the exact shell command deploy/hub.py plans, with
the real `runuser` and the real `signalbeam-hub init`, into a temporary data dir. Then the
deploy's hub.toml over init's own, which the hub must load.

The deploy runs init as the `signalbeam` user. Here it runs as root (built past the
validator, which refuses root): the test venv's Python lives under /root, which no other
user may enter on this machine.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.commands import init_command
from deploy.render import hub_context, render
from deploy.validate import validate_hub
from hub.config import DataDir, load

VENV = str(Path(sys.executable).parent.parent)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root and runuser"
)


def test_init_once_key_only_in_the_output_file(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    out = tmp_path / "init.txt"
    hub = validate_hub(
        {
            "signalbeam_venv": VENV,
            "signalbeam_hub_data_dir": str(data),
            "signalbeam_hub_public_host": "hub.example.com",
            "signalbeam_hub_client_port": 14222,
            "signalbeam_hub_leafnode_port": 17422,
            "signalbeam_hub_http_host": "127.0.0.1",
            "signalbeam_hub_replica_url": "s3://bucket/hub",
            "signalbeam_hub_init_output": str(out),
        }
    )
    hub = dataclasses.replace(hub, user="root")
    command = init_command(hub).get_raw_value()

    first = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    text = out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = next(line.strip() for line in text.splitlines() if line.strip().startswith("sbk_"))
    assert key not in first.stdout + first.stderr  # pyinfra would have shown those
    # The URLs handed out use the deploy's public host and ports.
    assert "@hub.example.com:14222" in text

    # The deploy then writes its own hub.toml; the hub must accept it as its config.
    (data / "hub.toml").write_text(render("hub.toml.j2", **hub_context(hub)))
    cfg, _ = load(DataDir(data))
    assert (cfg.client_port, cfg.leafnode_port, cfg.http_host) == (14222, 17422, "127.0.0.1")
    assert cfg.public_host == "hub.example.com" and cfg.replica_url == "s3://bucket/hub"

    # Initialised: the next deploy neither runs init nor touches the output file.
    before = out.read_text()
    second = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert out.read_text() == before
