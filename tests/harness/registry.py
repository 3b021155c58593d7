"""A real OCI registry (Debian's docker-registry) on loopback, with the test images pushed.

Images are built locally from a busybox-static rootfs (``podman import`` + ``podman build``
with no RUN step), never pulled from the internet:

- ``sbtest/hello:1.0`` / ``:2.0``: busybox httpd on env ``PORT`` serving its version string,
  with a HEALTHCHECK that fetches that page.
- ``sbtest/unhealthy:1.0``: the same server, with a HEALTHCHECK that always fails.
- ``sbtest/crash:1.0``: exits 1 at once.
- ``sbtest/pull:1.0``: sleeps; carries a layer of its own, so pulling it always moves bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from tests.harness.binaries import find_binary, require_binary
from tests.harness.ports import free_port
from tests.harness.procs import ManagedProcess

BUSYBOX_APPLETS = (
    "sh",
    "test",
    "[",
    "touch",
    "seq",
    "httpd",
    "echo",
    "cat",
    "sleep",
    "false",
    "true",
    "wget",
    "nc",
    "printf",
    "mkdir",
    "ls",
    "env",
    "kill",
    "ps",
    "date",
    "dd",
    "head",
    "yes",
    "rm",
)

_SERVE = (
    'mkdir -p /tmp/www && printf %s "$VERSION" > /tmp/www/index.html && '
    'echo "sbtest $VERSION listening on ${PORT:-8080}" && '
    'exec httpd -f -p "127.0.0.1:${PORT:-8080}" -h /tmp/www'
)
_PROBE = 'wget -q -O /dev/null "http://127.0.0.1:${PORT:-8080}/"'
# Probed every 2 s, but judged for a loaded machine: one probe (an engine exec, or podman's
# healthcheck run) can take seconds there, and httpd may not listen yet at the first probe.
# With --timeout=2s and no start period, two such probes in a row could make hello "unhealthy"
# and roll back a deployment that was fine. One success still makes it healthy at once.
_HELLO_HC = "--interval=2s --timeout=10s --start-period=30s --retries=2"

# name:tag -> Containerfile body (after FROM)
TEST_IMAGES: dict[str, str] = {
    "sbtest/hello:1.0": f"""ENV VERSION=1.0
HEALTHCHECK {_HELLO_HC} CMD ["/bin/sh", "-c", {json.dumps(_PROBE)}]
CMD ["/bin/sh", "-c", {json.dumps(_SERVE)}]""",
    "sbtest/hello:2.0": f"""ENV VERSION=2.0
HEALTHCHECK {_HELLO_HC} CMD ["/bin/sh", "-c", {json.dumps(_PROBE)}]
CMD ["/bin/sh", "-c", {json.dumps(_SERVE)}]""",
    "sbtest/unhealthy:1.0": f"""ENV VERSION=unhealthy-1.0
HEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD ["/bin/false"]
CMD ["/bin/sh", "-c", {json.dumps(_SERVE)}]""",
    "sbtest/crash:1.0": """ENV VERSION=crash-1.0
CMD ["/bin/sh", "-c", "echo crashing on purpose; exit 1"]""",
    # A layer no other image shares, so a pull of it always downloads bytes.
    "sbtest/pull:1.0": """COPY marker /marker
CMD ["/bin/sh", "-c", "exec sleep 3600"]""",
}


def build_rootfs_tar(workdir: Path) -> Path:
    busybox = find_binary("busybox") or "/bin/busybox"
    rootfs = workdir / "rootfs"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "tmp").mkdir()
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        os.symlink("busybox", rootfs / "bin" / applet)
    tar_path = workdir / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(rootfs, arcname=".")
    return tar_path


class Registry:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        conf = workdir / "registry.yml"
        conf.write_text(
            f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {workdir / "data"}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{self.port}
"""
        )
        self.proc = ManagedProcess(
            "docker-registry",
            [require_binary("docker-registry"), "serve", str(conf)],
            workdir / "registry.log",
        )
        self.proc.wait_ready(self._ready)
        self.registries_conf = workdir / "registries.conf"
        # Podman refuses plain-HTTP registries unless told; Docker allows 127.0.0.0/8 already.
        self.registries_conf.write_text(
            f'[[registry]]\nlocation = "{self.host}"\ninsecure = true\n'
        )

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as resp:
            return bool(resp.status == 200)

    def ref(self, name: str) -> str:
        """``registry.ref("sbtest/hello:1.0")`` -> ``127.0.0.1:PORT/sbtest/hello:1.0``."""
        return f"{self.host}/{name}"

    def push_test_images(self, images: dict[str, str] | None = None) -> None:
        """Build ``images`` (name:tag -> Containerfile lines after FROM; default: the sbtest
        set) on the busybox base and push them here."""
        build = self.workdir / "build"
        build.mkdir(exist_ok=True)
        # Podman refuses a runroot path longer than 50 characters; pytest's tmp paths are longer.
        runroot = tempfile.mkdtemp(prefix="sb-rr-")
        podman = [
            require_binary("podman"),
            "--root",
            str(build / "root"),
            "--runroot",
            runroot,
            "--storage-driver",
            "vfs",
        ]
        tar_path = build_rootfs_tar(build)
        _run(
            [
                *podman,
                "import",
                "--change",
                'CMD ["/bin/sh"]',
                str(tar_path),
                "localhost/sbtest/base:1",
            ]
        )
        for name, body in (TEST_IMAGES if images is None else images).items():
            ctx = build / name.replace("/", "_").replace(":", "_")
            ctx.mkdir(exist_ok=True)
            (ctx / "marker").write_text(f"{name}\n")
            (ctx / "Containerfile").write_text(
                f"FROM localhost/sbtest/base:1\nLABEL sbtest.image={name}\n{body}\n"
            )
            _run(
                [
                    *podman,
                    "build",
                    "--format",
                    "docker",
                    "--pull=never",
                    "-q",
                    "-t",
                    f"localhost/{name}",
                    str(ctx),
                ]
            )
            _run(
                [
                    *podman,
                    "push",
                    "--tls-verify=false",
                    "--format",
                    "v2s2",
                    f"localhost/{name}",
                    f"docker://{self.ref(name)}",
                ]
            )
        shutil.rmtree(runroot, ignore_errors=True)

    def stop(self) -> None:
        self.proc.stop()


def _run(argv: list[str]) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}):\n{res.stderr}")
