"""The pyinfra deploys planned with ``--dry`` against this machine (nothing executed).

This machine runs no systemd, so ``dry_env`` puts a stand-in ``systemctl`` on PATH that
answers ``show`` with nothing, as a systemd host answers for units that do not exist yet.
``planned`` reads the operations pyinfra would run, in order; ``index`` finds one of them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.harness.deploy_chroot import PYINFRA, ROOT, pyinfra_env

__all__ = ["PYINFRA", "ROOT", "dry_env", "index", "planned", "pyinfra_dry"]


def dry_env(tmp_path: Path) -> dict[str, str]:
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    stub = fakebin / "systemctl"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    out = pyinfra_env()
    out["PATH"] = f"{fakebin}:{out['PATH']}"
    return out


def pyinfra_dry(
    env: dict[str, str], deploy: str, data: dict[str, str], *flags: str, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """``pyinfra @local deploy/DEPLOY --dry`` with ``data`` as ``--data`` pairs."""
    argv = [PYINFRA, "@local", str(ROOT / "deploy" / deploy), "--dry", *flags]
    for key, value in data.items():
        argv += ["--data", f"{key}={value}"]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def planned(res: subprocess.CompletedProcess[str]) -> list[str]:
    """Operation names from pyinfra's "Detected changes" table, in order."""
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "--> Detected changes:" in out, out
    table = out.split("--> Detected changes:", 1)[1].split("Detected changes may not", 1)[0]
    names = []
    for line in table.splitlines()[2:]:
        name = line.strip().rsplit("  ", 2)[0].strip()
        if name:
            names.append(name)
    return names


def index(names: list[str], fragment: str) -> int:
    for i, name in enumerate(names):
        if fragment in name:
            return i
    raise AssertionError(f"no planned operation contains {fragment!r}: {names}")
