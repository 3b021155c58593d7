"""The agent's desired intake (agent/sync/intake.py) against a real agent store: what it
accepts, what it refuses and how a refusal is recorded, and the trust set it keeps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.precedence import revision_of
from agent.store import Store
from agent.sync.intake import NO_TRUST, Intake, admit, initial_trust
from bundles import from_dict
from bundles.signing import TrustSet, generate_key, sign_bundle, sign_trust_set
from protocol.desired import DesiredState

D1 = "sha256:" + "a" * 64
KEY, PUB = generate_key()
NEW, NEW_PUB = generate_key()
SPEC = from_dict(
    {
        "bundle": "hello",
        "version": "1.0.0",
        "containers": [{"name": "web", "image": f"127.0.0.1:5000/sbtest/hello:1.0@{D1}"}],
    }
).to_dict()
ENROLLED = TrustSet(1, True, (PUB,)).to_dict()


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store.open(tmp_path / "agent.db", device_id="dev-1")
    yield s
    s.close()


def _doc(gen: int, signed_by: Any = KEY, **kw: Any) -> DesiredState:
    sigs = (sign_bundle(from_dict(SPEC), signed_by),) if signed_by is not None else ()
    return DesiredState(gen, SPEC, signatures=sigs, **kw)


def test_admit_is_pure_and_ordered() -> None:
    trust = TrustSet(1, True, (PUB,))
    assert admit(_doc(5), trust).ok
    refused = admit(_doc(5, signed_by=None), trust)
    assert not refused.ok and "not signed" in (refused.reason or "")
    # the chain first: a document adding a key may carry a bundle signed by it
    add = sign_trust_set(2, True, [PUB, NEW_PUB], KEY).to_dict()
    a = admit(_doc(6, signed_by=NEW, trust=(add,)), trust)
    assert a.ok and a.trust.serial == 2
    assert admit(_doc(7), NO_TRUST).ok  # an agent of a hub without signing runs anything


def test_accepted_revision_records_nothing(store: Any, tmp_path: Path) -> None:
    intake = Intake(store, tmp_path / "trust.json", enrolled=ENROLLED)
    assert intake.check(_doc(3))
    assert store.deployments() == []
    assert not (tmp_path / "trust.json").exists()  # nothing changed: nothing written


def test_refusal_is_a_failed_deployment_an_event_and_a_journal_run(
    store: Any, tmp_path: Path
) -> None:
    intake = Intake(store, tmp_path / "trust.json", enrolled=ENROLLED)
    doc = _doc(4, signed_by=NEW)
    assert not intake.check(doc)
    dep = store.deployment(revision_of(doc))
    assert dep.status == "failed" and dep.reason.startswith("refused: the bundle is signed by")
    events = [e for e in store.events() if e.kind == "desired.refused"]
    assert len(events) == 1 and events[0].severity == "error"
    assert "keeps running what it had" in events[0].message
    runs = store.journal()
    assert runs[0].result == "failed" and runs[0].reason == dep.reason
    # Seen again (a restart before the revision was stored): recorded once.
    assert not intake.check(doc)
    assert len([d for d in store.deployments() if d.generation == 4]) == 1


def test_trust_set_persists_and_a_rogue_one_is_refused(store: Any, tmp_path: Path) -> None:
    path = tmp_path / "trust.json"
    intake = Intake(store, path, enrolled=ENROLLED)
    step = sign_trust_set(2, True, [NEW_PUB], KEY).to_dict()
    assert intake.check(_doc(5, signed_by=NEW, trust=(step,)))
    assert json.loads(path.read_text())["serial"] == 2
    assert (path.stat().st_mode & 0o777) == 0o600
    # a new process starts from the saved set, not the enrollment's
    again = Intake(store, path, enrolled=ENROLLED)
    assert again.trust.keys == (NEW_PUB,)
    rogue, rogue_pub = generate_key()
    bad = sign_trust_set(3, False, [rogue_pub], rogue).to_dict()
    assert not again.check(_doc(6, signed_by=rogue, trust=(step, bad)))
    assert again.trust.serial == 2
    kinds = [e.kind for e in store.events()]
    assert "trust.refused" in kinds and "trust.changed" in kinds


def test_config_keys_and_require_win(store: Any, tmp_path: Path) -> None:
    other, other_pub = generate_key()
    intake = Intake(store, tmp_path / "t.json", enrolled=ENROLLED, pinned=(other_pub,))
    assert intake.check(_doc(2, signed_by=other))
    lax = Intake(store, tmp_path / "t2.json", enrolled=ENROLLED, require=False)
    assert lax.check(_doc(3, signed_by=None))
    strict = Intake(store, tmp_path / "t3.json", enrolled=None, require=True)
    assert not strict.check(_doc(4, signed_by=None))


def test_initial_trust_prefers_the_newer(tmp_path: Path) -> None:
    path = tmp_path / "trust.json"
    assert initial_trust(path, None) == NO_TRUST
    assert initial_trust(path, ENROLLED).serial == 1
    path.write_text(json.dumps(TrustSet(5, True, (NEW_PUB,)).to_dict()))
    assert initial_trust(path, ENROLLED).serial == 5
    path.write_text("{not json")
    assert initial_trust(path, ENROLLED).serial == 1
