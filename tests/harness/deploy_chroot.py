"""Targets for the real deploy test (test_deploy_chroot.py): a Debian root filesystem made
with debootstrap, the package as a wheel, a wheelhouse of its dependencies, and pyinfra run
against a copy of the root filesystem through its ``@chroot`` connector.

The root filesystem and the wheelhouse are cached under ``/var/cache/signalbeam-test`` (or
``$SB_TEST_CACHE``), keyed by what they are made from, so only the first run on a machine
pays for debootstrap. Every test deploys into its own copy: a fresh host each time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
CACHE = Path(os.environ.get("SB_TEST_CACHE", "/var/cache/signalbeam-test"))
SUITE = "bookworm"
# A Debian host as the deploys expect one: systemd installed (a chroot does not run it).
# Everything else (python3, python3-venv, podman, runc) the deploys install themselves.
INCLUDE = ("systemd",)
ROOTFS_KEY = f"rootfs-{SUITE}-minbase-{'-'.join(INCLUDE)}"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGE_DIRS = ("agent", "hub", "tui", "bundles", "protocol", "sbutil")


def debian_mirror(suite: str = SUITE) -> str:
    """The Debian mirror this machine's apt uses for ``suite`` (one-line or deb822 sources),
    ``$SB_DEBIAN_MIRROR`` if set, else deb.debian.org."""
    if os.environ.get("SB_DEBIAN_MIRROR"):
        return os.environ["SB_DEBIAN_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for block in re.split(r"\n\s*\n", text):  # deb822: one stanza per blank-line block
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", block, re.MULTILINE))
            if suite in fields.get("Suites", "").split() and "deb" in fields.get("Types", ""):
                return fields.get("URIs", "").split()[0]
        for line in text.splitlines():
            m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s", line.strip() + " ")
            if m and m.group(2) == suite:
                return m.group(1)
    return DEFAULT_MIRROR


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder at a time per cache entry (parallel test runs on one machine)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _cached(name: str, build: Callable[[Path], None]) -> Path:
    """``CACHE/name``, built by ``build(tmpdir)`` once; a marker file says it is complete,
    so an interrupted build is redone rather than used."""
    final, marker = CACHE / name, CACHE / f"{name}.complete"
    with _locked(name):
        if marker.exists() and final.is_dir():
            return final
        partial = CACHE / f"{name}.partial"
        for leftover in (partial, final):
            if leftover.exists():
                shutil.rmtree(leftover)
        build(partial)
        partial.rename(final)
        marker.touch()
    return final


def cached_rootfs() -> Path:
    """A minimal Debian root filesystem (debootstrap --variant=minbase, with systemd)."""

    def build(target: Path) -> None:
        res = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(INCLUDE)}",
                SUITE,
                str(target),
                debian_mirror(),
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if res.returncode != 0:
            raise RuntimeError(f"debootstrap failed:\n{(res.stdout + res.stderr)[-4000:]}")

    return _cached(ROOTFS_KEY, build)


def copy_rootfs(dest: Path) -> Path:
    """A fresh host: a copy of the cached root filesystem (owners, modes, device nodes)."""
    subprocess.run(["cp", "-a", str(cached_rootfs()), str(dest)], check=True, timeout=600)
    return dest


def _source_copy(dest: Path) -> Path:
    """The package's sources outside the working tree: setuptools builds in place (a
    ``build/`` directory), and other runs may be building from the tree at the same time."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in PACKAGE_DIRS:
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=ignore)
    return dest


def _pip_wheel(*args: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if res.returncode != 0:
        raise RuntimeError(f"pip wheel {' '.join(args)} failed:\n{res.stderr[-4000:]}")


def project_wheel(workdir: Path) -> Path:
    """This checkout as a wheel (built fresh: the code under test)."""
    src = _source_copy(workdir / "src")
    out = workdir / "dist"
    _pip_wheel("--no-deps", "--wheel-dir", str(out), str(src))
    (wheel,) = out.glob("signalbeam_edge-*.whl")
    return wheel


def cached_wheelhouse(workdir: Path) -> Path:
    """Wheels of every dependency (from PyPI, or pip's cache), keyed by pyproject.toml. The
    target installs from them with ``pip --no-index``: same CPython minor and architecture
    as this machine (Debian 12: 3.11, like the test venv)."""
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    plat = f"py{sys.version_info.major}{sys.version_info.minor}-{os.uname().machine}"

    def build(target: Path) -> None:
        src = _source_copy(workdir / "wheelhouse-src")
        _pip_wheel("--wheel-dir", str(target), str(src))
        for own in target.glob("signalbeam_edge-*.whl"):
            own.unlink()

    return _cached(f"wheelhouse-{plat}-{key}", build)


def chroot_marks(timeout: int) -> list[Any]:
    """A chroot deploy test's marks: slow, as root, with debootstrap, bounded by ``timeout``."""
    return [
        pytest.mark.slow,
        pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and chroot need root"),
        pytest.mark.skipif(
            shutil.which("debootstrap") is None,
            reason="debootstrap not installed (deploy/dev/system-deps.sh installs it)",
        ),
        pytest.mark.timeout(timeout),
    ]


def pyinfra_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYINFRA")}


def run_pyinfra(rootfs: Path, deploy: str, data: dict[str, str]) -> dict[str, Any]:
    """``pyinfra -y --json @chroot/ROOTFS deploy/DEPLOY`` for real; its JSON results."""
    argv = [PYINFRA, "-y", "--json", f"@chroot/{rootfs}", str(ROOT / "deploy" / deploy)]
    for key, value in data.items():
        argv += ["--data", f"{key}={value}"]
    res = subprocess.run(
        argv, capture_output=True, text=True, env=pyinfra_env(), cwd=ROOT, timeout=1200
    )
    assert res.returncode == 0, f"pyinfra failed ({res.returncode}):\n{res.stderr[-6000:]}"
    doc: dict[str, Any] = json.loads(res.stdout)
    doc["stderr"] = res.stderr
    return doc


def changed(doc: dict[str, Any]) -> list[str]:
    """Names of the operations that changed (or failed on) the host."""
    return [op["name"] for op in doc["results"]["operations"] if op["success"] or op["error"]]


def in_root(rootfs: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chroot", str(rootfs), *argv], capture_output=True, text=True, timeout=timeout
    )


def passwd_entry(rootfs: Path, user: str) -> list[str] | None:
    for line in (rootfs / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return fields
    return None


def unit_settings(text: str) -> dict[str, str]:
    """``Key=value`` lines of a unit file (one value per key is enough here)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out
