"""`signalbeam device …` against a real device: a real `signalbeam-hub run`, one real
`signalbeam-agent run` (enrolled with a token, its own leaf nats-server) on the harness's
Podman engine, running one container whose shell ignores SIGTERM, so stopping it takes the
engine's whole stop timeout (10 s) before the kill, as a real service that never learned
to shut down does.

It checks what only a real device shows: `device restart` with its default wait answers
"restarted" and exits 0 although the stop alone takes the stop timeout (it used to wait 4 s,
exit 1 "did not answer" and leave the operator to restart again); the container really ran
again (its counter starts over); `device status` and `device show` read as text, not JSON;
`device logs -f` streams new lines and stops at its bound.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engines import EngineHandle
from tests.harness.registry import Registry
from tests.harness.sync_e2e import Device, deployed_device
from tests.harness.sync_hub import SyncHub
from tests.harness.wait import eventually_blocking
from tui.cli import run

pytestmark = [pytest.mark.engine, pytest.mark.slow]

DEVICE = "clidev-1"
ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^stubborn line (\d+)$")
# `trap '' TERM`: the shell ignores SIGTERM, so only the engine's kill after the stop
# timeout ends it (PID 1 in a container would ignore it anyway; the trap says so).
SCRIPT = 'trap "" TERM; i=0; while true; do i=$((i+1)); echo "stubborn line $i"; sleep 1; done'


def spec(registry: Registry) -> dict[str, Any]:
    return {
        "bundle": "stubborn",
        "version": "1.0.0",
        "containers": [
            {
                "name": "stubborn",
                "image": registry.ref("sbtest/pull:1.0"),
                "args": ["/bin/sh", "-c", SCRIPT],
                "network_mode": "none",
            }
        ],
    }


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    proc = SyncHub(tmp_path_factory.mktemp("clidevhub") / "data")
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


@pytest.fixture(scope="module")
def device(
    hub: SyncHub,
    _podman_service: EngineHandle,
    registry: Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Device]:
    root = tmp_path_factory.mktemp("clidev")
    with deployed_device(hub, _podman_service, root, DEVICE, spec(registry)) as dev:
        yield dev


def signalbeam(hub: SyncHub, *argv: str) -> subprocess.CompletedProcess[str]:
    """The real entry point, with the hub and key from the environment."""
    env = {
        **os.environ,
        "SIGNALBEAM_HUB": hub.url,
        "SIGNALBEAM_API_KEY": hub.admin_key,
        "SIGNALBEAM_CONFIG": "/nonexistent/config.toml",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def cli(hub: SyncHub, *argv: str) -> tuple[int, str, str]:
    """In-process, for the polls (a process per poll would load a busy machine more)."""
    out, err = io.StringIO(), io.StringIO()
    code = run(["--hub", hub.url, "--api-key", hub.admin_key, *argv], out, err)
    return code, out.getvalue(), err.getvalue()


def counters(text: str) -> list[int]:
    return [int(m.group(1)) for line in text.splitlines() if (m := LINE.match(line))]


def test_restart_of_a_container_that_ignores_sigterm_reports_success(
    hub: SyncHub, device: Device
) -> None:
    def lines_past(n: int) -> bool:
        code, out, _ = cli(hub, "device", "logs", DEVICE, "stubborn", "--tail", "5")
        return code == 0 and max(counters(out), default=0) > n

    eventually_blocking(lambda: lines_past(5), "the counter past 5", timeout=120, interval=1.0)

    done = signalbeam(hub, "device", "restart", DEVICE, "stubborn")  # the default wait
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"restarted stubborn on {DEVICE} (container sb-stubborn-")

    # It really started again: a fresh shell counts from 1 (the engine's log keeps the old
    # run's lines before the new ones, so a 1 after the first line is the new run's).
    def counting_again() -> bool:
        _, out, _ = cli(hub, "device", "logs", DEVICE, "stubborn", "--tail", "200")
        return 1 in counters(out)[1:]

    eventually_blocking(counting_again, "the counter starting over", timeout=120, interval=1.0)

    # The device recorded it, and the hub has the event.
    eventually_blocking(
        lambda: '"container.restarted"' in cli(hub, "events", "--device", DEVICE, "--json")[1],
        "the container.restarted event at the hub",
        timeout=120,
        interval=1.0,
    )


def test_device_status_and_show_read_as_text(hub: SyncHub, device: Device) -> None:
    done = signalbeam(hub, "device", "status", DEVICE)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "{" not in text, text
    assert f"device      {DEVICE}" in text
    assert "stubborn@1.0.0" in text and "hub link    online" in text
    table = text[text.index("SERVICE") :].splitlines()
    assert table[0].split() == ["SERVICE", "NAME", "STATE", "HEALTH", "IMAGE"]
    assert table[1].split()[0] == "stubborn"

    done = signalbeam(hub, "device", "show", DEVICE)
    assert done.returncode == 0, done.stderr
    assert "{" not in done.stdout, done.stdout
    assert "stubborn@1.0.0 (via device:" in done.stdout
    assert "last seen" in done.stdout and " ago" in done.stdout


def test_device_logs_follow_streams_and_stops_at_its_bound(hub: SyncHub, device: Device) -> None:
    out, err = io.StringIO(), io.StringIO()
    base = ["--hub", hub.url, "--api-key", hub.admin_key]
    argv = [*base, "device", "logs", DEVICE, "stubborn", "--tail", "3", "-f", "--follow-for", "8s"]
    assert run(argv, out, err) == 0, err.getvalue()
    seen = counters(out.getvalue())
    assert len(seen) > 3, out.getvalue()  # the tail, then lines written while following
    assert len(set(seen)) == len(seen) or 1 in seen, seen  # no line twice (unless restarted)
    assert "stopped following after 8s" in err.getvalue()
