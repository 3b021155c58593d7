"""A full disk under an agent that runs a real container (Podman, and Docker where present).

The container keeps serving while the agent restarts on the full disk and reports it; the
engine connects and the reconcile loop survives the episode, so once space is freed a new
desired state is applied without restarting the agent.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engines import EngineHandle
from tests.harness.ports import free_port
from tests.harness.registry import Registry
from tests.harness.wait import eventually_blocking
from tests.integration.test_agent_cli_engine import answer
from tests.integration.test_agent_disk_full import AgentProc, fill, tmpfs

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "mnt") as where:
        yield where


def test_container_keeps_running_and_the_loop_survives_a_full_disk(
    engine: EngineHandle, registry: Registry, tmp_path: Path, mount: Path
) -> None:
    device = f"full-{engine.kind}"
    svc_port = free_port()
    agent = AgentProc(tmp_path, mount / "data")
    agent.config.write_text(
        agent.config.read_text()
        .replace('device_id = "full-dev"', f'device_id = "{device}"')
        .replace(
            f'engine_socket = "unix://{tmp_path}/no-engine.sock"',
            f'engine_socket = "{engine.url}"\ndesired_poll_interval = "100ms"',
        )
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
      PORT: "{svc_port}"
"""
    )
    try:
        agent.start()
        agent.wait_up()
        assert agent.cli("apply", str(bundle)).returncode == 0
        eventually_blocking(
            lambda: answer(svc_port) == "1.0",
            "the service to answer 1.0",
            timeout=90,
            interval=0.25,
        )
        assert agent.stop() == 0

        filler = fill(mount)
        agent.start()
        agent.wait_up()

        def ready() -> dict[str, Any]:
            status, _, body = agent.call("GET", "/health/ready")
            return body["error"]["details"] if status == 503 else body["checks"]

        checks = eventually_blocking(
            lambda: (c := ready())["engine"] == "ok" and c,
            "the engine to connect",
            timeout=90,
            interval=0.25,
        )
        assert checks["store"].startswith("disk full"), checks
        # The engine kept the container: nothing the agent could not write stopped it.
        assert answer(svc_port) == "1.0"
        assert engine.containers(f"io.signalbeam.device={device}")

        filler.unlink()
        for crumb in mount.glob("crumb-*"):
            crumb.unlink()
        eventually_blocking(
            lambda: ready()["store"] == "ok",
            "the store to have room again",
            timeout=90,
            interval=0.25,
        )
        # The same agent, never restarted, applies a new desired state.
        eventually_blocking(
            lambda: agent.cli("apply", "--nothing").returncode == 0,
            "apply to go through",
            timeout=90,
            interval=0.25,
        )
        eventually_blocking(
            lambda: not engine.containers(f"io.signalbeam.device={device}"),
            "the container to be removed",
            timeout=90,
            interval=0.25,
        )
        assert agent.stop(signal.SIGTERM) == 0
        log = agent.log.read_text(errors="replace")
        assert "task reconcile failed" not in log and "reconcile loop crashed" not in log, log
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.stop(signal.SIGKILL)
