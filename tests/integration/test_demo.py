"""`make demo` end to end: hub, three enrolled agents on a private Podman, a bundle assigned
and rolled out; in the background, a device cut off and back; `make demo-stop` leaves
nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.engines import podman_available

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not podman_available(), reason="podman/runc not installed")
def test_demo_runs_to_a_succeeded_rollout_and_cleans_up(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    res = subprocess.run(
        [sys.executable, str(ROOT / "deploy/dev/demo.py"), "--exit", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    for device in ("pi-01", "pi-02", "nuc-01"):
        assert f"{device} runs warehouse-monitor@1.2.0" in out
    assert "[succeeded]" in out
    # Nothing the demo started outlives it: no process still runs from its workdir.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(workdir) not in ps


def _demo(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "deploy/dev/demo.py"), *args, "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _device_status(workdir: Path, device_id: str) -> str:
    env = dict(os.environ)
    for line in (workdir / "operator.env").read_text().splitlines():
        key, value = line.removeprefix("export ").split("=", 1)
        env[key] = value.strip("'")
    res = subprocess.run(
        [str(Path(sys.executable).parent / "signalbeam"), "--json", "device", "show", device_id],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    return str(json.loads(res.stdout).get("status"))


def _wait(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.skipif(not podman_available(), reason="podman/runc not installed")
def test_demo_in_the_background_offline_online_then_stop(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    try:
        up = _demo(workdir, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "offline pi-02" in up.stdout and "make demo-stop" in up.stdout
        # The stand-in images serve a status page on 127.0.0.1.
        with urllib.request.urlopen("http://127.0.0.1:18081/", timeout=5) as resp:
            assert b"temp-sensor" in resp.read()

        assert _demo(workdir, "offline", "pi-02").returncode == 0
        _wait("pi-02 offline", lambda: _device_status(workdir, "pi-02") == "offline")
        assert _device_status(workdir, "pi-01") == "online"
        assert _demo(workdir, "online", "pi-02").returncode == 0
        _wait("pi-02 online again", lambda: _device_status(workdir, "pi-02") == "online")
    finally:
        stop = _demo(workdir, "stop", timeout=180)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert not workdir.exists()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(workdir) not in ps
