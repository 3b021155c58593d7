"""Bad bundle input at both CLIs, as processes: one exit status (2) and no hang on a FIFO.

``signalbeam bundle validate`` and ``signalbeam-agent apply`` read bundle files through the
same ``bundles.load_file``; an invalid or unreadable bundle is bad input, which exits 2 in
every SignalBeam CLI (docs/cli.md, docs/agent.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Generous for a loaded machine; a FIFO open without O_NONBLOCK would block past it.
TIMEOUT = 60


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; from {argv[0]} import main; sys.exit(main())",
            *argv[1:],
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


def validate(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run(["tui.cli", "bundle", "validate", str(path), *extra])


def apply(path: Path, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run(["agent.cli", "apply", str(path), "--config", str(config), *extra])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('data_dir = "data"\ndevice_id = "cli-input"\n')
    return cfg


def test_an_invalid_bundle_exits_2_from_both_clis(tmp_path: Path, config: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("bundle: demo\nversion: 1.0.0\ncontainers:\n  - name: a\n    ports: 5\n")
    v = validate(bad)
    assert v.returncode == 2, v.stderr
    assert f"{bad}:5: containers[0].ports:" in v.stderr
    a = apply(bad, config)
    assert a.returncode == 2, a.stderr
    assert "containers[0].ports" in a.stderr and "(line 5)" in a.stderr
    vj = validate(bad, "--json")
    assert vj.returncode == 2 and json.loads(vj.stdout)["valid"] is False
    aj = apply(bad, config, "--json")
    assert aj.returncode == 2 and json.loads(aj.stdout)["error"]["code"] == "invalid"


@pytest.mark.parametrize("kind", ["fifo", "directory", "missing"])
def test_a_path_that_is_not_a_bundle_file_exits_2_without_waiting(
    tmp_path: Path, config: Path, kind: str
) -> None:
    path = tmp_path / "bundle.yaml"
    if kind == "fifo":
        os.mkfifo(path)  # nobody ever writes to it
    elif kind == "directory":
        path.mkdir()
    for proc in (validate(path), apply(path, config)):
        assert proc.returncode == 2, (proc.args, proc.stderr)
        assert str(path) in proc.stderr
        if kind != "missing":
            assert "not a regular file" in proc.stderr
