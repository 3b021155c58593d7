"""Lint gates that run with the suite: ruff, and the layer contracts (import-linter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_clean() -> None:
    res = _run(str(BIN / "ruff"), "check", ".")
    assert res.returncode == 0, res.stdout + res.stderr


def test_layer_contracts_hold() -> None:
    # agent must not import hub/tui/textual, hub not agent/tui, tui only over NATS, and the
    # shared packages none of them: see [tool.importlinter] in pyproject.toml.
    res = _run(str(BIN / "lint-imports"))
    assert res.returncode == 0, res.stdout + res.stderr
