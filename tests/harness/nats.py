"""Real nats-server processes for tests: a JetStream hub and leaf nodes linked through a proxy."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from tests.harness.binaries import require_binary
from tests.harness.ports import free_port
from tests.harness.procs import ManagedProcess
from tests.harness.proxy import TcpProxy


def _healthy(http_port: int, query: str = "") -> bool:
    url = f"http://127.0.0.1:{http_port}/healthz{query}"
    with urllib.request.urlopen(url, timeout=1) as resp:
        return bool(resp.status == 200)


class NatsHub:
    """A hub nats-server: JetStream domain ``hub``, leafnode listener with no_advertise."""

    def __init__(self, workdir: Path, *, extra_conf: str = "") -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.leaf_port = free_port()
        self.http_port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.conf_path = workdir / "hub.conf"
        store = workdir / "js"
        self.conf_path.write_text(
            f"""server_name: hub
listen: 127.0.0.1:{self.port}
http: 127.0.0.1:{self.http_port}
jetstream {{
  domain: hub
  store_dir: {json.dumps(str(store))}
  max_memory_store: 64MB
  max_file_store: 1GB
}}
leafnodes {{
  listen: 127.0.0.1:{self.leaf_port}
  no_advertise: true
}}
{extra_conf}
"""
        )
        self.proc = ManagedProcess(
            "nats-hub",
            [require_binary("nats-server"), "-c", str(self.conf_path)],
            workdir / "hub.log",
        )
        self.proc.wait_ready(lambda: _healthy(self.http_port, "?js-enabled-only=true"))

    def leafz(self) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/leafz", timeout=10) as resp:
            doc: dict[str, object] = json.load(resp)
            return doc

    def leaf_count(self) -> int:
        return int(self.leafz().get("leafnodes", 0))  # type: ignore[call-overload]

    def stop(self) -> None:
        self.proc.stop()


class NatsLeaf:
    """A device's leaf nats-server, linked to the hub through a cuttable ``TcpProxy``."""

    def __init__(self, hub: NatsHub, device_id: str, workdir: Path) -> None:
        self.device_id = device_id
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.proxy = TcpProxy(hub.leaf_port)
        self.port = free_port()
        self.http_port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.conf_path = workdir / f"leaf-{device_id}.conf"
        self.conf_path.write_text(
            f"""server_name: leaf-{device_id}
listen: 127.0.0.1:{self.port}
http: 127.0.0.1:{self.http_port}
leafnodes {{
  reconnect: "1s"
  remotes: [ {{ url: "nats-leaf://127.0.0.1:{self.proxy.port}" }} ]
}}
"""
        )
        self.proc = ManagedProcess(
            f"nats-leaf-{device_id}",
            [require_binary("nats-server"), "-c", str(self.conf_path)],
            workdir / f"leaf-{device_id}.log",
        )
        self.proc.wait_ready(lambda: _healthy(self.http_port) and self.linked())

    def linked(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/leafz", timeout=10) as resp:
            return int(json.load(resp).get("leafnodes", 0)) > 0

    def cut(self) -> None:
        self.proxy.cut()

    def restore(self) -> None:
        self.proxy.restore()

    def stop(self) -> None:
        self.proc.stop()
        self.proxy.close()
