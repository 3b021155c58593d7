"""What the hub keeps of signed bundles (hub/store/signing.py), on a real SQLite file: the
trust chain's rules at push time, signatures checked against it, and the desired documents
that carry both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bundles import content_hash, from_dict
from bundles.signing import generate_key, sign_bundle, sign_trust_set
from hub.errors import Conflict, Invalid, NotFound
from hub.store import Store
from hub.sync.desired_kv import resolve_documents
from protocol.desired import DesiredState

D1 = "sha256:" + "a" * 64
OLD, OLD_PUB = generate_key()
NEW, NEW_PUB = generate_key()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "hub.db")
    s.require_signed_default = True  # a new hub's setting (init writes it)
    yield s
    s.close()


def _spec(version: str = "1.0.0") -> Any:
    return from_dict(
        {
            "bundle": "app",
            "version": version,
            "containers": [{"name": "web", "image": f"127.0.0.1:5000/app:1@{D1}"}],
        }
    )


def _push(store: Store, version: str = "1.0.0") -> Any:
    spec = _spec(version)
    store.put_bundle_version(
        spec.bundle, spec.version, spec.to_dict(), content_hash(spec), spec.description
    )
    return spec


def test_serial_zero_follows_the_hub_setting(store: Store) -> None:
    assert store.trust_set() == {"serial": 0, "require": True, "keys": []}
    store.require_signed_default = False
    assert store.trust_set()["require"] is False
    assert store.trust_cache == store.trust_set()
    assert store.trust_chain() == []


def test_a_version_devices_would_refuse_cannot_be_assigned(store: Store) -> None:
    spec = _push(store)
    with pytest.raises(Conflict, match="trusts no key yet") as refused:
        store.check_runnable("app", "1.0.0")
    assert "not signed" in str(refused.value) and refused.value.field == "bundle"
    store.check_runnable("app", "9.9.9")  # unknown: the assignment itself names it
    store.put_trust_set(sign_trust_set(1, True, [OLD_PUB], OLD).to_dict())
    with pytest.raises(Conflict, match=r"resign app@1\.0\.0 --key KEY"):
        store.check_runnable("app", "1.0.0")
    store.put_bundle_signature("app", "1.0.0", sign_bundle(spec, OLD))
    store.check_runnable("app", "1.0.0")
    store.require_signed_default = False
    store.check_runnable("app", "1.0.0")


def test_a_hub_made_before_signed_bundles_keeps_running_unsigned(tmp_path: Path) -> None:
    from hub.config import HubConfig, parse_toml

    assert parse_toml("client_port = 4222\n").require_signed_bundles is False
    assert HubConfig().require_signed_bundles is False


def test_trust_chain_rules(store: Store) -> None:
    first = sign_trust_set(1, True, [OLD_PUB], OLD).to_dict()
    with pytest.raises(Conflict, match="serial must be 1"):
        store.put_trust_set(sign_trust_set(2, True, [OLD_PUB], OLD).to_dict())
    assert store.put_trust_set(first)["serial"] == 1  # the first: any signer (first use)
    rogue, rogue_pub = generate_key()
    with pytest.raises(Invalid, match="does not trust"):
        store.put_trust_set(sign_trust_set(2, False, [rogue_pub], rogue).to_dict())
    tampered = sign_trust_set(2, True, [OLD_PUB, NEW_PUB], OLD).to_dict()
    tampered["require"] = False
    with pytest.raises(Invalid, match="does not verify"):
        store.put_trust_set(tampered)
    with pytest.raises(Invalid):
        store.put_trust_set({"serial": 2, "require": True, "keys": ["nope"]})
    store.put_trust_set(sign_trust_set(2, True, [OLD_PUB, NEW_PUB], OLD).to_dict())
    assert [t["serial"] for t in store.trust_chain()] == [1, 2]
    assert store.trust_cache is not None and store.trust_cache["serial"] == 2


def test_signatures_must_verify_with_the_newest_set(store: Store) -> None:
    spec = _push(store)
    sig = sign_bundle(spec, OLD)
    with pytest.raises(Invalid, match="unknown key"):  # no trust set yet
        store.put_bundle_signature("app", "1.0.0", sig)
    store.put_trust_set(sign_trust_set(1, True, [OLD_PUB], OLD).to_dict())
    assert store.put_bundle_signature("app", "1.0.0", sig) is True
    assert store.put_bundle_signature("app", "1.0.0", sig) is False  # the same again
    forged = dict(sig, sig=sign_bundle(_spec("9.9.9"), OLD)["sig"])
    with pytest.raises(Invalid, match="altered"):
        store.put_bundle_signature("app", "1.0.0", forged)
    with pytest.raises(NotFound):
        store.put_bundle_signature("app", "2.0.0", sig)
    assert store.bundle_signatures("app", "1.0.0") == [sig]


def test_retiring_the_only_signer_of_an_assigned_version_needs_force(store: Store) -> None:
    spec = _push(store)
    store.put_trust_set(sign_trust_set(1, True, [OLD_PUB], OLD).to_dict())
    store.put_bundle_signature("app", "1.0.0", sign_bundle(spec, OLD))
    store.upsert_device("dev-1", "acme")
    store.assign("device", "dev-1", "app", "1.0.0")
    store.put_trust_set(sign_trust_set(2, True, [OLD_PUB, NEW_PUB], OLD).to_dict())
    retire = sign_trust_set(3, True, [NEW_PUB], NEW).to_dict()
    with pytest.raises(Conflict, match=r"app@1\.0\.0: the bundle is signed by unknown key"):
        store.put_trust_set(retire)
    # re-signed by the new key: the rotation goes through
    store.put_bundle_signature("app", "1.0.0", sign_bundle(spec, NEW))
    assert store.put_trust_set(retire)["serial"] == 3


def test_desired_documents_carry_signatures_and_the_chain(store: Store) -> None:
    spec = _push(store)
    store.put_trust_set(sign_trust_set(1, True, [OLD_PUB], OLD).to_dict())
    sig = sign_bundle(spec, OLD)
    store.put_bundle_signature("app", "1.0.0", sig)
    store.upsert_device("dev-1", "acme")
    store.upsert_device("dev-2", "acme")
    store.assign("device", "dev-1", "app", "1.0.0")
    docs = resolve_documents(store, None)
    one = DesiredState.from_json(docs["dev-1"].doc)
    assert one.signatures == (json.loads(json.dumps(sig)),)
    assert [t["serial"] for t in one.trust] == [1]
    none = DesiredState.from_json(docs["dev-2"].doc)
    assert none.spec is None and none.signatures == () and len(none.trust) == 1


def test_unsigned_fleet_documents_keep_their_bytes(store: Store) -> None:
    spec = _push(store)
    store.upsert_device("dev-1", "acme")
    store.assign("device", "dev-1", "app", "1.0.0")
    doc = json.loads(resolve_documents(store, None)["dev-1"].doc)
    assert "signatures" not in doc and "trust" not in doc
    assert doc["spec"] == spec.to_dict()


def test_a_rotation_mid_rollout_must_not_strand_what_abort_would_restore(store: Store) -> None:
    """Signing trust rotation during an active rollout: dev-1 ran app@1.0.0 from its own
    device-level assignment, which the rollout's phase replaced. Retiring the only key that
    signed 1.0.0 must be refused while the rollout can still be aborted (abort gives 1.0.0
    back, and the device would refuse it). Failed before: only the assignments table was
    looked at, where the rollout had replaced 1.0.0."""
    from hub.rollouts import engine, service
    from hub.rollouts import machine as m

    one, two = _push(store, "1.0.0"), _push(store, "2.0.0")
    store.put_trust_set(sign_trust_set(1, True, [OLD_PUB], OLD).to_dict())
    store.put_bundle_signature("app", "1.0.0", sign_bundle(one, OLD))
    store.put_bundle_signature("app", "2.0.0", sign_bundle(two, OLD))
    for d in ("dev-1", "dev-2"):
        store.upsert_device(d, "acme")
        store.set_device_status(d, "online")
        store.assign("device", d, "app", "1.0.0")
    store.put_trust_set(sign_trust_set(2, True, [OLD_PUB, NEW_PUB], OLD).to_dict())
    store.put_bundle_signature("app", "2.0.0", sign_bundle(two, NEW))  # the new version: resigned
    rid = service.create(store, "device", "dev-1", "app", "2.0.0", 0, m.Share(count=0))
    retire = sign_trust_set(3, True, [NEW_PUB], NEW).to_dict()
    # dev-2 leaves 1.0.0: from now on only the rollout's abort would give 1.0.0 back
    store.assign("device", "dev-2", "app", "2.0.0")
    engine.tick(store)  # phase 1 written: dev-1's own 1.0.0 assignment replaced
    assert store.resolve_desired(["dev-1"])["dev-1"].ref == "app@2.0.0"  # type: ignore[union-attr]
    with pytest.raises(Conflict, match=r"app@1\.0\.0"):
        store.put_trust_set(retire)
    store.put_bundle_signature("app", "1.0.0", sign_bundle(one, NEW))
    assert store.put_trust_set(retire)["serial"] == 3
    assert store.rollout_row(rid)["status"] == "running"
