"""Signed bundles and trust sets (bundles/signing.py): canonical form, verification verdicts,
the trust chain's rules, and properties over generated bundles."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundles import from_dict
from bundles.signing import (
    SigningError,
    TrustSet,
    advance,
    advance_chain,
    bundle_payload,
    generate_key,
    key_id,
    parse_public_key,
    pin_images,
    sign_bundle,
    sign_trust_set,
    verify_bundle,
)
from tests.unit.test_bundle_properties import shuffled, valid_docs

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
QUICK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEY, PUB = generate_key()
OTHER, OTHER_PUB = generate_key()


def _doc(image: str = f"127.0.0.1:5000/sbtest/hello:1.0@{D1}") -> dict[str, Any]:
    return {"bundle": "hello", "version": "1.0.0", "containers": [{"name": "web", "image": image}]}


def _signed(
    doc: dict[str, Any] | None = None, key: Any = KEY
) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = from_dict(doc or _doc())
    return spec.to_dict(), sign_bundle(spec, key)


def _trust(*keys: str, require: bool = True) -> TrustSet:
    return TrustSet(0, require, tuple(sorted(keys)))


def test_signed_bundle_verifies_with_its_key() -> None:
    spec, sig = _signed()
    v = verify_bundle(spec, [sig], _trust(PUB))
    assert v.ok and v.key_id == key_id(PUB)


def test_unsigned_refused_when_required_and_accepted_when_not() -> None:
    spec, _ = _signed()
    v = verify_bundle(spec, [], _trust(PUB))
    assert not v.ok and "not signed" in (v.reason or "")
    assert verify_bundle(spec, [], _trust(PUB, require=False)).ok
    # the agent's own config overrides the set's flag, both ways
    assert not verify_bundle(spec, [], _trust(PUB, require=False), require=True).ok
    assert verify_bundle(spec, [], _trust(PUB), require=False).ok


def test_not_required_ignores_unknown_keys_but_checks_known_ones() -> None:
    spec, sig = _signed(key=OTHER)
    assert verify_bundle(spec, [sig], _trust(PUB, require=False)).ok
    spec, sig = _signed()
    spec["containers"][0]["env"] = {"EVIL": "1"}
    v = verify_bundle(spec, [sig], _trust(PUB, require=False))
    assert not v.ok and "altered" in (v.reason or "")


def test_unknown_key_refused() -> None:
    spec, sig = _signed(key=OTHER)
    v = verify_bundle(spec, [sig], _trust(PUB))
    assert not v.ok
    assert f"unknown key {key_id(OTHER_PUB)}" in (v.reason or "")


def test_pinned_key_is_trusted_without_the_set() -> None:
    spec, sig = _signed(key=OTHER)
    assert verify_bundle(spec, [sig], _trust(PUB), pinned=[OTHER_PUB]).ok


def test_altered_bundle_refused() -> None:
    spec, sig = _signed()
    spec["containers"][0]["env"] = {"EVIL": "1"}
    v = verify_bundle(spec, [sig], _trust(PUB))
    assert not v.ok and "altered" in (v.reason or "")


def test_moved_tag_named_in_the_reason() -> None:
    spec, sig = _signed()
    spec["containers"][0]["image"] = f"127.0.0.1:5000/sbtest/hello:1.0@{D2}"
    v = verify_bundle(spec, [sig], _trust(PUB))
    assert not v.ok
    assert f"127.0.0.1:5000/sbtest/hello:1.0 now names {D2}, but {D1} was signed" in (
        v.reason or ""
    )


def test_stripped_digest_named_in_the_reason() -> None:
    spec, sig = _signed()
    spec["containers"][0]["image"] = "127.0.0.1:5000/sbtest/hello:1.0"
    v = verify_bundle(spec, [sig], _trust(PUB))
    assert not v.ok and "was removed" in (v.reason or "")


def test_signing_needs_pinned_images() -> None:
    with pytest.raises(SigningError, match="pin every image"):
        sign_bundle(from_dict(_doc("127.0.0.1:5000/sbtest/hello:1.0")), KEY)


def test_pin_images_adds_the_digest_and_keeps_the_tag() -> None:
    spec = from_dict(_doc("127.0.0.1:5000/sbtest/hello:1.0"))
    pinned = pin_images(spec, {"127.0.0.1:5000/sbtest/hello:1.0": D1})
    assert pinned.containers[0].image == f"127.0.0.1:5000/sbtest/hello:1.0@{D1}"
    with pytest.raises(SigningError, match="no digest"):
        pin_images(spec, {})


def test_any_one_trusted_signature_is_enough() -> None:
    spec, old = _signed()
    _, new = _signed(key=OTHER)
    assert verify_bundle(spec, [new, old], _trust(PUB)).ok
    assert verify_bundle(spec, [old, new], _trust(OTHER_PUB)).ok


def test_run_no_bundle_needs_no_signature() -> None:
    assert verify_bundle(None, [], _trust(PUB)).ok


def test_garbage_signatures_are_refusals_not_crashes() -> None:
    spec, _ = _signed()
    for bad in ({"key_id": key_id(PUB), "sig": "!!"}, {"key_id": key_id(PUB)}, {}, "x", None):
        v = verify_bundle(spec, [bad], _trust(PUB))
        assert not v.ok and v.reason


def test_public_key_text_round_trip_and_errors() -> None:
    parse_public_key(PUB)
    for bad in ("", "ed25519:", "rsa:AAAA", "ed25519:" + "A" * 10):
        with pytest.raises(SigningError):
            parse_public_key(bad)


# ---------------------------------------------------------------- trust sets


def test_rotation_chain_add_then_retire() -> None:
    start = _trust(PUB)
    both = sign_trust_set(1, True, [PUB, OTHER_PUB], KEY)
    only_new = sign_trust_set(2, True, [OTHER_PUB], OTHER)
    state = advance(start, both.to_dict())
    assert set(state.keys) == {PUB, OTHER_PUB}
    state = advance(state, only_new.to_dict())
    assert state.keys == (OTHER_PUB,)
    # an offline device gets both at once, in any order
    state2, problems = advance_chain(start, [only_new.to_dict(), both.to_dict()])
    assert state2 == state and not problems


def test_a_set_signed_by_an_untrusted_key_is_refused() -> None:
    rogue, rogue_pub = generate_key()
    doc = sign_trust_set(1, True, [PUB, rogue_pub], rogue).to_dict()
    with pytest.raises(SigningError, match="does not trust"):
        advance(_trust(PUB), doc)
    state, problems = advance_chain(_trust(PUB), [doc])
    assert state.keys == (PUB,) and problems


def test_a_tampered_or_unsigned_set_is_refused() -> None:
    doc = sign_trust_set(1, True, [PUB], KEY).to_dict()
    doc["require"] = False  # a hub trying to switch signatures off
    with pytest.raises(SigningError, match="does not verify"):
        advance(_trust(PUB), doc)
    unsigned = {"serial": 1, "require": False, "keys": [PUB]}
    with pytest.raises(SigningError, match="not signed"):
        advance(_trust(PUB), unsigned)


def test_older_or_equal_serial_changes_nothing() -> None:
    current = advance(_trust(PUB), sign_trust_set(5, True, [PUB], KEY).to_dict())
    assert advance(current, sign_trust_set(3, False, [OTHER_PUB], KEY).to_dict()) is current


def test_empty_set_takes_the_first_on_trust_but_pinned_keys_close_that() -> None:
    rogue, rogue_pub = generate_key()
    doc = sign_trust_set(1, True, [rogue_pub], rogue).to_dict()
    assert advance(_trust(), doc).keys == (rogue_pub,)
    with pytest.raises(SigningError):
        advance(_trust(), doc, pinned=[PUB])


def test_trust_set_shape_errors() -> None:
    bad: Any
    for bad in (None, [], {"serial": -1, "require": True, "keys": []},
                {"serial": 1, "require": "yes", "keys": []},
                {"serial": 1, "require": True, "keys": ["nope"]},
                {"serial": True, "require": True, "keys": []}):  # fmt: skip
        with pytest.raises(SigningError):
            advance(_trust(PUB), bad)


# ---------------------------------------------------------------- properties


def _pinned(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for c in doc["containers"]:
        c["image"] = f"{c['image']}@{D1}"
    return doc


@QUICK
@given(valid_docs(), st.randoms(use_true_random=False))
def test_canonical_form_ignores_key_order_and_defaults(
    doc: dict[str, Any], rnd: random.Random
) -> None:
    doc = _pinned(doc)
    spec = from_dict(doc)
    again = from_dict(shuffled(json.loads(json.dumps(spec.to_dict())), rnd))
    assert bundle_payload(again) == bundle_payload(spec)
    sig = sign_bundle(spec, KEY)
    assert verify_bundle(shuffled(doc, rnd), [sig], _trust(PUB)).ok


@QUICK
@given(valid_docs(), st.data())
def test_any_change_of_meaning_breaks_the_signature(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    spec = from_dict(_pinned(doc))
    sig = sign_bundle(spec, KEY)
    changed = spec.to_dict()
    i = data.draw(st.integers(0, len(changed["containers"]) - 1))
    field = data.draw(st.sampled_from(["image", "env", "version", "restart"]))
    c = changed["containers"][i]
    if field == "image":
        c["image"] = c["image"].rsplit("@", 1)[0] + f"@{D2}"
    elif field == "env":
        c["env"] = {**c.get("env", {}), "INJECTED": "1"}
    elif field == "version":
        changed["version"] = changed["version"] + "-x" if "-" not in changed["version"] else "9.9.9"
    else:
        c["restart"] = "always" if c.get("restart") != "always" else "no"
    v = verify_bundle(changed, [sig], _trust(PUB))
    assert not v.ok and "altered" in (v.reason or "")
