"""Signed bundles end to end on real parts: a real `signalbeam-hub run` with the default of
new hubs (signatures required), the operator's real `signalbeam` CLI holding the keys, two
real `signalbeam-agent run` processes on a real Podman engine, and the test registry.

- The operator signs with `bundle push --sign`: every image is pinned to the digest its
  registry serves, and the devices run exactly that digest, even after the tag moves.
- A compromised hub writes desired documents itself (the test puts them in the KV bucket with
  the hub's own login): a tampered bundle, an unsigned one, one signed by a key of its own
  (with a trust set of its own), and one whose tag was resolved again to the moved digest.
  Every device refuses each with a clear reason, keeps running its version, and the hub shows
  the reason (device show, events).
- Key rotation: add a key (signed by the old one), re-sign what runs, retire the old key
  (signed by the new one); the devices follow the chain and keep running; a bundle signed by
  the retired key is refused at push, one signed by the new key rolls out.
- An unsigned bundle rolled out by an honest hub: the rollout pauses with the device's reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bundles import from_dict
from bundles.signing import generate_key, sign_bundle, sign_trust_set
from protocol.desired import DesiredState
from tests.harness.engines import EngineHandle
from tests.harness.registry import Registry
from tests.harness.sync_e2e import Device, enrollment_token, running_fleet
from tests.harness.sync_hub import SyncHub
from tests.harness.wait import eventually, eventually_blocking
from tui.client import ApiError, HubClient

pytestmark = [pytest.mark.engine, pytest.mark.slow]
IDS = ("sig-1", "sig-2")
WAIT = 180.0  # pulls and health windows on a loaded machine
MOVING = "sbtest/hello:signtest"  # a tag of the test's own, moved from hello:1.0 to hello:2.0
V2S2 = "application/vnd.docker.distribution.manifest.v2+json"
REPO = Path(__file__).resolve().parents[2]


def _manifest(registry: Registry, repo: str, tag: str) -> tuple[bytes, str]:
    req = urllib.request.Request(
        f"http://{registry.host}/v2/{repo}/manifests/{tag}", headers={"Accept": V2S2}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read(), str(resp.headers["Docker-Content-Digest"])


def move_tag(registry: Registry, source_tag: str) -> str:
    """Point ``MOVING`` at the manifest of ``sbtest/hello:<source_tag>``; its digest."""
    body, digest = _manifest(registry, "sbtest/hello", source_tag)
    req = urllib.request.Request(
        f"http://{registry.host}/v2/sbtest/hello/manifests/signtest",
        data=body,
        method="PUT",
        headers={"Content-Type": V2S2},
    )
    with urllib.request.urlopen(req, timeout=30):
        pass
    return digest


class Operator:
    """The `signalbeam` CLI as an operator runs it, with its own keys directory."""

    def __init__(self, hub: SyncHub, keys: Path) -> None:
        self.env = {
            **os.environ,
            "SIGNALBEAM_HUB": hub.url,
            "SIGNALBEAM_API_KEY": hub.admin_key,
            "SIGNALBEAM_KEYS_DIR": str(keys),
            "PYTHONPATH": str(REPO),
        }

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [sys.executable, "-m", "tui.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
            cwd=REPO,
        )
        if ok:
            assert res.returncode == 0, f"signalbeam {' '.join(args)}: {res.stderr}{res.stdout}"
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)


def hello(registry: Registry, version: str, image: str) -> dict[str, Any]:
    return {
        "bundle": "hello",
        "version": version,
        "containers": [
            {
                "name": "web",
                "image": registry.ref(image),
                "network_mode": "none",
                "env": {"PORT": "8080"},
            }
        ],
        "update": {"health_window": 30},
    }


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    proc = SyncHub(tmp_path_factory.mktemp("sighub") / "data", signed_bundles=True)
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


@pytest.fixture(scope="module")
def operator(hub: SyncHub, tmp_path_factory: pytest.TempPathFactory) -> Operator:
    op = Operator(hub, tmp_path_factory.mktemp("opkeys") / "keys")
    created = op.json("signing-key", "create", "op1")
    assert created["public_key"].startswith("ed25519:")
    assert (Path(created["path"]).stat().st_mode & 0o777) == 0o600
    # The fleet's first trust set, before any device enrolls: they learn it at enrollment.
    pushed = op.json("signing-key", "trust", "op1")
    assert pushed["trust"]["serial"] == 1 and pushed["trust"]["require"] is True
    return op


@pytest.fixture(scope="module")
def fleet(
    hub: SyncHub,
    operator: Operator,
    _podman_service: EngineHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Device]]:
    root = tmp_path_factory.mktemp("sigdevices")
    with running_fleet(hub, _podman_service, root, IDS, enrollment_token(hub, len(IDS))) as devs:
        yield devs
        _podman_service.remove_test_containers()


@pytest.fixture
async def admin(hub: SyncHub) -> AsyncIterator[HubClient]:
    async with HubClient(hub.url, hub.admin_key, timeout=60) as c:
        yield c


def runs_now(dev: Device, digest: str) -> bool:
    """The device runs one container, of the image with exactly this manifest digest. By
    content, not by name: Podman lists the container under whichever tag first pulled the
    same image (a CI run that had pulled ``sbtest/hello:1.0`` before saw that name)."""
    running = [c for c in dev.containers() if c.get("State") == "running"]
    if len(running) != 1:
        return False
    known = dev.engine.repo_digests(str(running[0]["ImageID"]))
    return any(d.endswith(f"@{digest}") for d in known)


def runs(dev: Device, digest: str) -> bool:
    """``runs_now`` within a bound: the hub's "healthy" can arrive while the engine still
    lists a container the agent is removing (seen under load in a CI run)."""
    seen: list[list[dict[str, Any]]] = [[]]

    def check() -> bool:
        seen[0] = dev.containers()
        return runs_now(dev, digest)

    try:
        eventually_blocking(check, f"{dev.device_id} runs {digest}", timeout=60)
    except AssertionError as exc:
        brief = [{k: c.get(k) for k in ("Names", "Image", "ImageID", "State")} for c in seen[0]]
        raise AssertionError(f"{exc}; the engine lists {brief}") from None
    return True


async def deployment(admin: HubClient, device_id: str) -> dict[str, Any]:
    got = await admin.call("devices.get", {"id": device_id})
    dep: dict[str, Any] = ((got.get("reported") or {}).get("state") or {}).get("deployment") or {}
    return dep


async def all_healthy(admin: HubClient, ref: str, after: int = 0) -> None:
    async def check() -> bool:
        for d in IDS:
            dep = await deployment(admin, d)
            if (dep.get("bundle_ref"), dep.get("status")) != (ref, "healthy"):
                return False
            if int(dep.get("generation") or 0) <= after:
                return False
        return True

    await eventually(check, timeout=WAIT, what=f"every device healthy on {ref}")


async def hub_put(hub: SyncHub, docs: dict[str, DesiredState]) -> dict[str, int]:
    """What a compromised hub can do: put any desired document for any device."""
    nc = await hub.hub_nc()
    try:
        kv = await nc.jetstream().key_value("desired")
        return {d: await kv.put(d, doc.to_json()) for d, doc in docs.items()}
    finally:
        await nc.close()


async def refused_everywhere(admin: HubClient, revs: dict[str, int], phrase: str) -> None:
    """Every device refused the revision, and the hub shows why: a ``desired.refused`` event
    and a failed deployment of that generation whose reason says it. (The deployment the
    device reports next is its running one again, once the rollback gate has seen it
    healthy, so the failed row is read from the device's rows, not its latest state.)"""

    async def check() -> bool:
        for d, rev in revs.items():
            events = (await admin.call("events.list", {"device": d, "limit": 50}))["items"]
            mine = [
                e
                for e in events
                if e["kind"] == "desired.refused" and e["data"].get("generation") == rev
            ]
            if not mine:
                return False
            assert phrase in mine[0]["message"], mine[0]
            assert phrase in mine[0]["data"]["reason"], mine[0]
        return True

    await eventually(check, timeout=WAIT, what=f"every device refusing ({phrase})")
    for d, rev in revs.items():
        got = await admin.call("devices.get", {"id": d})
        state = (got.get("reported") or {}).get("state") or {}
        # The device acknowledged the revision (what a rollout waits for) ...
        assert (state.get("desired") or {}).get("generation") == rev, state
        dep = state.get("deployment") or {}
        # ... and its deployment is that revision refused, or the one it runs again.
        if dep.get("generation") == rev:
            assert dep["status"] == "failed" and dep["reason"].startswith("refused: "), dep
            assert phrase in dep["reason"], dep
        else:
            assert dep.get("bundle_ref") == "hello@1.0.0", dep


async def test_signed_bundles_and_a_compromised_hub(
    hub: SyncHub,
    operator: Operator,
    fleet: dict[str, Device],
    admin: HubClient,
    registry: Registry,
    tmp_path: Path,
) -> None:
    d1 = move_tag(registry, "1.0")
    await eventually(
        lambda: all(dev.online() for dev in fleet.values()), timeout=90, what="devices online"
    )
    for dev in fleet.values():
        trust = json.loads((dev.data / "hub-credentials.json").read_text())["trust"]
        assert trust["serial"] == 1 and len(trust["keys"]) == 1  # learnt at enrollment

    # The operator signs: the image is pinned to the digest the registry serves now.
    path = tmp_path / "hello-1.json"
    path.write_text(json.dumps(hello(registry, "1.0.0", MOVING)))
    pushed = operator.json("bundle", "push", "--sign", str(path))
    assert pushed["signatures"] == 1
    stored = await admin.call("bundles.get", {"name": "hello", "version": "1.0.0"})
    pinned = registry.ref(f"{MOVING}@{d1}")
    assert stored["spec"]["containers"][0]["image"] == pinned
    await admin.call("groups.create", {"name": "signed"})
    for d in IDS:
        await admin.call("groups.add", {"name": "signed", "device": d})
    await admin.call("assign", {"target": "group:signed", "bundle": "hello@1.0.0"})
    await all_healthy(admin, "hello@1.0.0")
    for dev in fleet.values():
        assert runs(dev, d1)

    # The tag moves in the registry; the signed bundle still means the signed digest.
    d2 = move_tag(registry, "2.0")
    assert d2 != d1
    spec = stored["spec"]
    good_sigs = tuple(
        json.loads(r[0])
        for r in hub.query("SELECT signature FROM bundle_signatures WHERE version = '1.0.0'")
    )
    assert len(good_sigs) == 1

    rogue, rogue_pub = generate_key()
    tampered = json.loads(json.dumps(spec))
    tampered["containers"][0]["env"]["EXTRA"] = "1"
    moved = json.loads(json.dumps(spec))
    moved["containers"][0]["image"] = registry.ref(f"{MOVING}@{d2}")
    rogue_trust = sign_trust_set(2, True, [rogue_pub], rogue).to_dict()
    attacks = [
        ("tampered", DesiredState(0, tampered, signatures=good_sigs), "altered after signing"),
        ("unsigned", DesiredState(0, moved), "not signed"),
        (
            "unknown key",
            DesiredState(
                0,
                moved,
                signatures=(sign_bundle(from_dict(moved), rogue),),
                trust=(rogue_trust,),
            ),
            "unknown key",
        ),
        (
            "moved tag",
            DesiredState(0, moved, signatures=good_sigs),
            f"now names {d2}, but {d1} was signed",
        ),
    ]
    for what, doc, phrase in attacks:
        revs = await hub_put(hub, dict.fromkeys(IDS, doc))
        await refused_everywhere(admin, revs, phrase)
        for dev in fleet.values():
            assert runs(dev, d1), what
    # The refusal is in the device's events at the hub too, with the reason.
    events = (await admin.call("events.list", {"device": IDS[0], "limit": 100}))["items"]
    refused = [e for e in events if e["kind"] == "desired.refused"]
    assert len(refused) >= len(attacks), events
    assert any("the device keeps running what it had" in e["message"] for e in refused)
    trust_refused = [e for e in events if e["kind"] == "trust.refused"]
    assert trust_refused and "does not trust" in trust_refused[0]["message"]
    # ... and the device never took the rogue key.
    for dev in fleet.values():
        saved = dev.data / "trust.json"
        assert not saved.exists() or rogue_pub not in saved.read_text()

    # The honest hub speaks again (a new revision of what it holds): accepted, still 1.0.
    before = max(revs.values())
    await admin.call("unassign", {"target": "group:signed"})
    await admin.call("assign", {"target": "group:signed", "bundle": "hello@1.0.0"})
    await all_healthy(admin, "hello@1.0.0", after=before)


async def test_key_rotation_without_an_outage(
    hub: SyncHub,
    operator: Operator,
    fleet: dict[str, Device],
    admin: HubClient,
    registry: Registry,
    tmp_path: Path,
) -> None:
    await all_healthy(admin, "hello@1.0.0")
    start = max([int((await deployment(admin, d))["generation"]) for d in IDS])
    operator.json("signing-key", "create", "op2")
    assert operator.json("signing-key", "trust", "op2", "--with", "op1")["trust"]["serial"] == 2
    resigned = operator.json("bundle", "resign", "hello@1.0.0", "--key", "op2")
    assert resigned["signatures"] == 2
    retired = operator.json("signing-key", "retire", "op1", "--with", "op2")["trust"]
    assert retired["serial"] == 3 and len(retired["keys"]) == 1
    # Every device walks the chain to serial 3 and keeps running, on a new revision.
    await all_healthy(admin, "hello@1.0.0", after=start)

    def at_serial_3() -> bool:
        for dev in fleet.values():
            saved = dev.data / "trust.json"
            if not saved.exists() or json.loads(saved.read_text())["serial"] != 3:
                return False
        return True

    await eventually(at_serial_3, timeout=WAIT, what="every device on trust set 3")

    # The retired key can sign nothing any more: the hub says so at push time.
    path = tmp_path / "hello-2.json"
    path.write_text(json.dumps(hello(registry, "2.0.0", "sbtest/hello:2.0")))
    res = operator.run("bundle", "push", "--sign", "--key", "op1", str(path), ok=False)
    assert res.returncode == 1 and "unknown key" in res.stderr, res.stderr
    # A rogue trust set is refused by the hub as well (the devices would refuse it anyway).
    rogue, rogue_pub = generate_key()
    with pytest.raises(ApiError, match="does not trust"):
        await admin.call(
            "trust.push", {"trust": sign_trust_set(4, False, [rogue_pub], rogue).to_dict()}
        )
    # The new key signs the next version, and it rolls out.
    operator.json("bundle", "push", "--sign", "--key", "op2", str(path))
    await admin.call("assign", {"target": "group:signed", "bundle": "hello@2.0.0"})
    await all_healthy(admin, "hello@2.0.0")


async def test_rollout_of_an_unsigned_bundle_pauses_with_the_reason(
    hub: SyncHub, fleet: dict[str, Device], admin: HubClient, registry: Registry
) -> None:
    await admin.call("bundles.push", {"spec": hello(registry, "3.0.0", "sbtest/hello:2.0")})
    start = {"bundle": "hello@3.0.0", "target": "group:signed", "canary_percent": 50}
    # The hub refuses it up front, naming the fix ...
    with pytest.raises(ApiError) as refused:
        await admin.call("rollouts.start", start)
    assert refused.value.code == "conflict", refused.value
    assert "not signed" in str(refused.value) and "resign hello@3.0.0" in str(refused.value)
    with pytest.raises(ApiError, match="devices would refuse"):
        await admin.call("assign", {"target": "group:signed", "bundle": "hello@3.0.0"})
    # ... and an operator who forces it through sees each device refuse it.
    r = await admin.call("rollouts.start", {**start, "force": True})

    async def stopped() -> bool:
        nonlocal r
        r = await admin.call("rollouts.get", {"id": r["id"]})
        return r["state"] in ("paused", "failed", "succeeded")

    await eventually(stopped, timeout=WAIT, what="the rollout stopped")
    assert r["state"] == "paused", r
    failed = [d for d in r["devices"] if d["state"] == "Failed"]
    assert len(failed) == 1 and "refused: the bundle is not signed" in failed[0]["reason"], r
    canary = failed[0]["device"]
    # still the signed 2.0.0 (pinned: the image of sbtest/hello:2.0 by digest)
    assert runs(fleet[canary], _manifest(registry, "sbtest/hello", "2.0")[1])
    await admin.call("rollouts.abort", {"id": r["id"]})
