"""`make demo` end to end: hub, three enrolled agents on a private Podman, a bundle assigned
and rolled out; then everything it started is gone."""

from __future__ import annotations

import subprocess
import sys
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
