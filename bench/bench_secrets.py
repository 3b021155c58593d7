"""What per-device variables and secrets cost the hub's desired-document resolver.

    python -m bench.bench_secrets              # 2 000 devices, 3 runs
    python -m bench.bench_secrets --devices 10000 --runs 1

A real SQLite store (WAL) with N enrolled devices in 4 groups, each with a sealing key, one
bundle assigned to every group. Timed: ``resolve_documents`` for every device (what a
fleet-wide change or a hub start recomputes), for

- baseline: the same bundle without references (the resolver as before this feature);
- vars: the bundle refers to 2 variables (fleet, group and device values set);
- vars+secret: and to one secret: "resolve" is what an unchanged fleet costs (a document is
  sealed only when it is to be written), "resolve+seal" what a fleet-wide rotation costs
  (the value decrypted once, then sealed to each device's key).

Prints seconds per run, microseconds per device, and the load average, all from this run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from hub.store import Store
from hub.sync.desired_kv import resolve_documents
from hub.vault import Vault
from sbutil.seal import SealKey


def bundle(version: str, env: dict[str, str]) -> dict[str, Any]:
    return {
        "bundle": "app",
        "version": version,
        "containers": [{"name": "web", "image": "registry.local/web:1.0", "env": env}],
    }


CASES = {
    "baseline": bundle("1.0.0", {"PORT": "8080", "SITE": "fixed"}),
    "vars": bundle("2.0.0", {"PORT": "8080", "SITE": "${SITE}", "ZONE": "${ZONE}"}),
    "vars+secret": bundle(
        "3.0.0", {"PORT": "8080", "SITE": "${SITE}", "ZONE": "${ZONE}", "T": "${secret:TOKEN}"}
    ),
}


def setup(path: Path, devices: int) -> Store:
    store = Store.open(path / "hub.db")
    store.vault = Vault.load_or_create(path / "vault.key")
    public = SealKey.generate().public  # one key for all: sealing costs the same per device
    with store.tx():
        for g in range(4):
            store.create_group(f"g{g}")
        for i in range(devices):
            d = f"dev-{i:06d}"
            store.upsert_device(d, "acme")
            store.add_to_group(f"g{i % 4}", d)
            store.set_seal_key(d, public)
    for case, spec in CASES.items():
        store.put_bundle_version("app", spec["version"], spec, f"hash-{case}", "")
    store.set_variable("var", "fleet", "", "SITE", "fleet", "bench")
    store.set_variable("var", "fleet", "", "ZONE", "z", "bench")
    store.set_variable("var", "group", "g1", "SITE", "g1", "bench")
    store.set_variable("var", "device", "dev-000003", "SITE", "own", "bench")
    store.set_variable("secret", "fleet", "", "TOKEN", "s3cr3t-value", "bench")
    return store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=2000)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    devices = max(1, min(a.devices, 100_000))  # bounded
    runs = max(1, min(a.runs, 10))
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        store = setup(Path(tmp), devices)
        try:
            for case, spec in CASES.items():
                for g in range(4):  # re-assigning replaces the group's assignment
                    store.assign("group", f"g{g}", "app", spec["version"])
                for what, seal in (("resolve", False), ("resolve+seal", True)):
                    if seal and case != "vars+secret":
                        continue
                    times = []
                    for _ in range(runs):
                        t0 = time.perf_counter()
                        docs = resolve_documents(store, None)
                        if seal:  # every document written: a fleet-wide rotation
                            docs = {d: doc.final() for d, doc in docs.items()}
                        times.append(time.perf_counter() - t0)
                        assert len(docs) == devices
                    med = statistics.median(times)
                    each = ", ".join(f"{t:.3f}" for t in times)
                    print(
                        f"{case:12s} {what:13s} {devices} devices: median {med:.3f} s"
                        f" ({med / devices * 1e6:.0f} us/device; runs {each})"
                    )
        finally:
            store.close()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
