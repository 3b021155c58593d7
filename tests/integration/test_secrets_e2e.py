"""Per-device variables and secrets end to end on real parts: a real `signalbeam-hub run`,
the operator's real `signalbeam` CLI (a secret's value on stdin), two real
`signalbeam-agent run` processes on a real Podman engine, and the test registry.

- Variables set for the fleet, a group and one device reach each device's container env by
  the precedence rule, and `device show -o json` names each value's source.
- A secret set for one device reaches that device's container (read inside it through the
  engine's exec) and appears nowhere else: not in the hub's DB or WAL, the NATS store dir
  (the desired KV and every stream), the KV history read through the hub's own NATS login,
  the hub's or agents' logs, nor either device's store (the device's own keeps it sealed).
- Rotating the secret recreates that device's container with the new value, without a new
  bundle version; the other device's container is left alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol.desired import DesiredState
from tests.harness.engines import EngineHandle, _unix_request
from tests.harness.registry import Registry
from tests.harness.sync_e2e import Device, enrollment_token, running_fleet
from tests.harness.sync_hub import SyncHub
from tests.harness.wait import eventually_blocking

pytestmark = [pytest.mark.engine, pytest.mark.slow]
IDS = ("sec-1", "sec-2")
WAIT = 180.0  # pulls and health windows on a loaded machine
REPO = Path(__file__).resolve().parents[2]


class Operator:
    def __init__(self, hub: SyncHub) -> None:
        self.env = {
            **os.environ,
            "SIGNALBEAM_HUB": hub.url,
            "SIGNALBEAM_API_KEY": hub.admin_key,
            "PYTHONPATH": str(REPO),
        }

    def run(self, *args: str, stdin: str | None = None) -> str:
        res = subprocess.run(
            [sys.executable, "-m", "tui.cli", *args],
            capture_output=True, text=True, timeout=120, env=self.env, cwd=REPO, input=stdin,
        )  # fmt: skip
        assert res.returncode == 0, f"signalbeam {' '.join(args)}: {res.stderr}{res.stdout}"
        return res.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json"))


def spec(registry: Registry) -> dict[str, Any]:
    return {
        "bundle": "hello",
        "version": "1.0.0",
        "containers": [
            {
                "name": "web",
                "image": registry.ref("sbtest/hello:1.0"),
                "network_mode": "none",
                "env": {"PORT": "8080", "SITE": "${SITE}", "TOKEN": "${secret:API_TOKEN}"},
            }
        ],
        "update": {"health_window": 5},
    }


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    proc = SyncHub(tmp_path_factory.mktemp("sechub") / "data")
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


@pytest.fixture(scope="module")
def fleet(
    hub: SyncHub, _podman_service: EngineHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Device]]:
    root = tmp_path_factory.mktemp("secdevices")
    with running_fleet(hub, _podman_service, root, IDS, enrollment_token(hub, len(IDS))) as devs:
        yield devs
        _podman_service.remove_test_containers()


def container(dev: Device) -> dict[str, Any] | None:
    running = [c for c in dev.containers() if c.get("State") == "running"]
    return running[0] if len(running) == 1 else None


def env_inside(dev: Device, name: str) -> str | None:
    """The variable in the running container's env, as the engine created it (its inspect:
    what the container's processes get)."""
    c = container(dev)
    if c is None:
        return None
    status, body = _unix_request(dev.engine.socket, "GET", f"/containers/{c['Id']}/json", 30)
    if status != 200:
        return None
    for item in json.loads(body)["Config"]["Env"] or ():
        key, _, value = item.partition("=")
        if key == name:
            return str(value)
    return None


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
            continue
        for p in root.rglob("*"):
            if p.is_file() and not p.is_symlink():
                yield p


def holders(value: str, *roots: Path) -> list[str]:
    needle = value.encode()
    found = []
    for p in files_under(*roots):
        try:
            if needle in p.read_bytes():
                found.append(str(p))
        except OSError:
            continue  # a socket or a file removed meanwhile
    return found


async def kv_history(hub: SyncHub) -> dict[str, list[bytes]]:
    """Every revision of every key of the desired bucket, through the hub's NATS login."""
    nc = await hub.hub_nc()
    try:
        kv = await nc.jetstream().key_value("desired")
        return {d: [e.value or b"" for e in await kv.history(d)] for d in IDS}
    finally:
        await nc.close()


def test_variables_and_secrets_reach_only_their_device(
    hub: SyncHub, fleet: dict[str, Device], registry: Registry, tmp_path: Path
) -> None:
    op = Operator(hub)
    one, two = fleet["sec-1"], fleet["sec-2"]
    secret_1 = "s1-" + secrets.token_hex(12)
    secret_2 = "s2-" + secrets.token_hex(12)
    op.run("group", "create", "north")
    for d in IDS:
        op.run("group", "add", "north", d)
    op.run("vars", "set", "SITE", "fleet-site", "--fleet")
    op.run("vars", "set", "SITE", "north-site", "--group", "north")
    op.run("vars", "set", "SITE", "two-site", "--device", "sec-2")
    op.run("secrets", "set", "API_TOKEN", "--device", "sec-1", stdin=secret_1 + "\n")
    path = tmp_path / "token"
    path.write_text(secret_2)
    op.run("secrets", "set", "API_TOKEN", "--device", "sec-2", "--from-file", str(path))
    path.unlink()
    bundle = tmp_path / "hello.json"
    bundle.write_text(json.dumps(spec(registry)))
    op.run("bundle", "push", str(bundle))
    op.run("assign", "group:north", "hello@1.0.0")

    eventually_blocking(
        lambda: env_inside(one, "TOKEN") == secret_1 and env_inside(two, "TOKEN") == secret_2,
        "each device's container running with its own secret", timeout=WAIT, interval=1.0,
    )  # fmt: skip
    assert env_inside(one, "SITE") == "north-site"
    assert env_inside(two, "SITE") == "two-site"

    shown = op.json("device", "show", "sec-2")
    assert {v["name"]: (v["value"], v["source"]) for v in shown["variables"]} == {
        "SITE": ("two-site", "device:sec-2")
    }
    assert shown["variables"][0]["shadows"] == ["fleet", "group:north"]
    assert [(s["name"], s["source"]) for s in shown["secrets"]] == [("API_TOKEN", "device:sec-2")]
    assert secret_2 not in json.dumps(shown)
    one_shown = op.json("device", "show", "sec-1")
    assert {v["name"]: v["source"] for v in one_shown["variables"]} == {"SITE": "group:north"}
    listed = op.json("secrets", "list")
    assert secret_1 not in json.dumps(listed) and secret_2 not in json.dumps(listed)

    # Nowhere else: the hub's data dir (DB, WAL, NATS store with the KV and every stream,
    # nats-server's log), the hub's log, each device's dir (store, leaf NATS store, log).
    hub_places = (hub.data, hub.data.parent / f"{hub.data.name}-hub.log")
    assert holders(secret_1, *hub_places) == []
    assert holders(secret_2, *hub_places) == []
    assert holders(secret_1, one.dir, two.dir) == []
    assert holders(secret_2, one.dir, two.dir) == []
    history = asyncio.run(kv_history(hub))
    for d, revisions in history.items():
        for raw in revisions:
            assert secret_1.encode() not in raw and secret_2.encode() not in raw, d
    latest = {d: DesiredState.from_json(revs[-1]) for d, revs in history.items()}
    assert latest["sec-1"].secrets is not None and latest["sec-1"].secrets["sealed"]
    assert latest["sec-1"].variables == {"SITE": "north-site"}

    # Rotation: a new value for sec-1 recreates its container, with no new bundle version;
    # sec-2's container is left alone.
    before_1, before_2 = container(one), container(two)
    assert before_1 is not None and before_2 is not None
    rotated = "s1b-" + secrets.token_hex(12)
    op.run("secrets", "set", "API_TOKEN", "--device", "sec-1", stdin=rotated)

    eventually_blocking(
        lambda: env_inside(one, "TOKEN") == rotated,
        "sec-1's container recreated with the rotated secret", timeout=WAIT, interval=1.0,
    )  # fmt: skip
    after_1, after_2 = container(one), container(two)
    assert after_1 is not None and after_1["Id"] != before_1["Id"]
    assert after_2 is not None and after_2["Id"] == before_2["Id"]
    assert holders(rotated, *hub_places, one.dir, two.dir) == []
