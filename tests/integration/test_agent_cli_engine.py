"""`signalbeam-agent run` as a subprocess on a real engine (Podman, and Docker where present):
apply a bundle with the CLI, the service answers, apply "nothing", it is gone, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engines import EngineHandle
from tests.harness.ports import free_port
from tests.harness.registry import Registry
from tests.harness.wait import eventually_blocking

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def cli(*args: str) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def answer(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return None


def test_run_apply_converge_and_stop(
    engine: EngineHandle, registry: Registry, tmp_path: Path
) -> None:
    port = free_port()
    device = f"cli-{engine.kind}"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'data_dir = "data"\ndevice_id = "{device}"\nengine_socket = "{engine.url}"\n'
        'desired_poll_interval = "100ms"\n[http]\nenabled = false\n'
    )
    bundle = tmp_path / "hello.yaml"
    bundle.write_text(
        f"""bundle: hello
version: 1.0.0
containers:
  - name: web
    image: {registry.ref("sbtest/hello:1.0")}
    network_mode: host
    env:
      PORT: "{port}"
"""
    )
    log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log,
        cwd=REPO,
    )
    try:
        status = lambda: cli("status", "--config", str(config))  # noqa: E731
        eventually_blocking(
            lambda: (tmp_path / "data" / "agent.db").exists(),
            "the store",
            timeout=90,
            interval=0.25,
        )
        cli("apply", str(bundle), "--config", str(config))
        eventually_blocking(
            lambda: answer(port) == "1.0", "the service to answer 1.0", timeout=90, interval=0.25
        )
        s = eventually_blocking(
            lambda: (
                (st := status())["deployment"] and st["deployment"]["status"] == "healthy" and st
            ),
            "a healthy deployment",
            timeout=90,
            interval=0.25,
        )
        assert [c["state"] for c in s["containers"]] == ["running"]
        assert engine.containers(f"io.signalbeam.device={device}")

        cli("apply", "--nothing", "--config", str(config))
        eventually_blocking(
            lambda: not engine.containers(f"io.signalbeam.device={device}"),
            "removal",
            timeout=90,
            interval=0.25,
        )
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        kinds = [e["kind"] for e in cli("events", "--config", str(config), "--limit", "500")]
        assert "engine.connected" in kinds and kinds[-1] == "agent.stopped"
    finally:
        if agent.poll() is None:
            os.kill(agent.pid, signal.SIGKILL)
            agent.wait(timeout=10)
        log.close()
