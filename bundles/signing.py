"""Signed bundles and the trusted-key set: canonical forms, ed25519 signatures, and the one
pure decision an agent makes about a desired revision. No I/O, no clock.

Why here and pure: the operator's CLI signs, the hub only relays, and the agent decides. All
three must agree byte for byte on what is signed, and the agent's decision must not depend on
anything the hub can influence beyond the bytes it relays. docs/security.md tells the story.

Canonical forms (the bytes an ed25519 signature covers):

- a bundle: ``b"signalbeam-bundle-v1\\n" + canonical_json(spec.to_dict())``: the validated
  model, so YAML or JSON formatting, key order and defaults written or omitted never change
  it (the same text the content hash covers, docs/bundles.md), prefixed so a bundle
  signature can never be replayed as a trust-set signature or the other way round;
- a trust set: ``b"signalbeam-trust-v1\\n" + canonical_json({"serial", "require", "keys"})``
  with ``keys`` sorted.

A signed bundle pins every image by digest (``name:tag@sha256:...``): the engine pulls that
digest and checks the content against it, so the signature covers the bytes that run, not a
tag someone can move.

Trust sets are a chain. Serial 0 is what the hub hands out at enrollment (trusted on first
use, like the registration token); each later set must carry a higher serial and be signed
by a key the device trusts *now*, so a hub that is compromised later cannot add a key of its
own. Keys pinned in the agent's config file are trusted whatever the chain says.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bundles.errors import BundleError
from bundles.hashing import canonical_json
from bundles.image import parse_image_ref
from bundles.model import BundleSpec
from bundles.validate import from_dict

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# ``cryptography`` is imported only where a key is used (signing, or checking a signature by
# a trusted key): it is ~7 MiB of RSS that an agent of a fleet without signing never needs.

BUNDLE_DOMAIN = b"signalbeam-bundle-v1\n"
TRUST_DOMAIN = b"signalbeam-trust-v1\n"
ALG = "ed25519"
KEY_PREFIX = "ed25519:"
KEY_ID_HEX = 16  # 64 bits of the key's sha256: a name, not a secret
MAX_KEYS = 32  # a trust set; more is a mistake, not a fleet
MAX_SIGNATURES = 8  # on one bundle (old and new key during a rotation, and some slack)
MAX_CHAIN = 256  # trust sets carried in one desired document


class SigningError(BundleError):
    """A key, signature or trust set that is malformed or does not verify."""


# ---------------------------------------------------------------- keys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SigningError(f"{what} is not base64url: {exc}") from None


def public_key_text(key: Any) -> str:
    """``ed25519:<base64url of the 32 raw bytes>``: how a public key is written everywhere."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return KEY_PREFIX + _b64(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def parse_public_key(text: str) -> bytes:
    """The 32 raw bytes of a public key written ``ed25519:<base64url>``."""
    if not isinstance(text, str) or not text.startswith(KEY_PREFIX):
        raise SigningError(f"public key must be written {KEY_PREFIX}<base64url>, got {text!r}")
    raw = _unb64(text[len(KEY_PREFIX) :], "public key")
    if len(raw) != 32:
        raise SigningError("an ed25519 public key is 32 bytes")
    return raw


def key_id(public_key: str) -> str:
    """A short, stable name for a public key (the first 16 hex digits of its sha256)."""
    parse_public_key(public_key)
    return hashlib.sha256(public_key.encode()).hexdigest()[:KEY_ID_HEX]


def generate_key() -> tuple[Ed25519PrivateKey, str]:
    """A new private key and its public key text."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    return private, public_key_text(private.public_key())


# ---------------------------------------------------------------- bundles


def bundle_payload(spec: BundleSpec) -> bytes:
    """The canonical bytes a bundle signature covers."""
    return BUNDLE_DOMAIN + canonical_json(spec.to_dict())


def unpinned_images(spec: BundleSpec) -> list[str]:
    """Containers whose image is not pinned by a digest (``name: image``)."""
    return [
        f"{c.name}: {c.image}" for c in spec.containers if parse_image_ref(c.image).digest is None
    ]


def pin_images(spec: BundleSpec, digests: Mapping[str, str]) -> BundleSpec:
    """The same bundle with every image written ``name[:tag]@digest``. ``digests`` maps each
    image reference as written to the digest its registry resolved it to; an image already
    pinned keeps its digest."""
    containers = []
    doc = spec.to_dict()
    for c in doc["containers"]:
        ref = parse_image_ref(c["image"])
        if ref.digest is None:
            digest = digests.get(c["image"])
            if digest is None:
                raise SigningError(f"no digest resolved for image {c['image']}")
            c["image"] = f"{c['image']}@{digest}"
        containers.append(c)
    return from_dict(doc)


def sign_bundle(spec: BundleSpec, private: Ed25519PrivateKey) -> dict[str, Any]:
    """A signature block for a bundle whose images are all pinned. ``images`` repeats each
    container's pinned image: not trusted (the signature covers the spec itself), only used
    to say *which* image was changed when a signature no longer verifies."""
    loose = unpinned_images(spec)
    if loose:
        raise SigningError("pin every image by digest before signing: " + ", ".join(loose))
    public = public_key_text(private.public_key())
    return {
        "alg": ALG,
        "key_id": key_id(public),
        "sig": _b64(private.sign(bundle_payload(spec))),
        "images": {c.name: c.image for c in spec.containers},
    }


def _verify(public: str, sig: str, payload: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = Ed25519PublicKey.from_public_bytes(parse_public_key(public))
        key.verify(_unb64(sig, "signature"), payload)
    except (InvalidSignature, SigningError, ValueError):
        return False
    return True


# ---------------------------------------------------------------- trust sets


@dataclass(frozen=True)
class TrustSet:
    """Which keys sign this fleet's bundles, and whether unsigned bundles are refused."""

    serial: int
    require: bool
    keys: tuple[str, ...]  # public key texts, sorted
    signature: Mapping[str, Any] | None = None  # None only for serial 0 (enrollment)

    def body(self) -> dict[str, Any]:
        return {"serial": self.serial, "require": self.require, "keys": sorted(self.keys)}

    def to_dict(self) -> dict[str, Any]:
        doc = self.body()
        if self.signature is not None:
            doc["signature"] = dict(self.signature)
        return doc

    @property
    def key_ids(self) -> dict[str, str]:
        return {key_id(k): k for k in self.keys}


def trust_payload(serial: int, require: bool, keys: Iterable[str]) -> bytes:
    return TRUST_DOMAIN + canonical_json(
        {"serial": serial, "require": require, "keys": sorted(keys)}
    )


def parse_trust_set(doc: Any) -> TrustSet:
    """Check the shape of a trust-set document (not its signature)."""
    if not isinstance(doc, Mapping):
        raise SigningError("a trust set must be an object")
    serial, require, keys = doc.get("serial"), doc.get("require"), doc.get("keys")
    if not isinstance(serial, int) or isinstance(serial, bool) or not 0 <= serial < 2**53:
        raise SigningError("trust set serial must be a non-negative integer")
    if not isinstance(require, bool):
        raise SigningError("trust set require must be true or false")
    if not isinstance(keys, list) or len(keys) > MAX_KEYS:
        raise SigningError(f"trust set keys must be a list of at most {MAX_KEYS}")
    for k in keys:
        parse_public_key(k)
    sig = doc.get("signature")
    if sig is not None and not (
        isinstance(sig, Mapping)
        and isinstance(sig.get("key_id"), str)
        and isinstance(sig.get("sig"), str)
    ):
        raise SigningError("trust set signature must be {key_id, sig}")
    return TrustSet(serial, require, tuple(sorted(set(keys))), sig)


def sign_trust_set(
    serial: int, require: bool, keys: Iterable[str], private: Ed25519PrivateKey
) -> TrustSet:
    keys = tuple(sorted(set(keys)))
    for k in keys:
        parse_public_key(k)
    public = public_key_text(private.public_key())
    sig = {
        "alg": ALG,
        "key_id": key_id(public),
        "sig": _b64(private.sign(trust_payload(serial, require, keys))),
    }
    return TrustSet(serial, require, keys, sig)


def advance(current: TrustSet, doc: Any, pinned: Iterable[str] = ()) -> TrustSet:
    """The trust set after ``doc``: ``current`` when ``doc`` is not newer; ``doc`` when it is
    newer and signed by a key trusted now (``current``'s or a ``pinned`` one). A device that
    trusts no key at all takes the first set it is handed (trust on first use; pin keys in
    the agent's config to close that window). ``SigningError`` says why a newer set is
    refused."""
    new = parse_trust_set(doc)
    if new.serial <= current.serial:
        return current
    trusted = {key_id(k): k for k in (*current.keys, *pinned)}
    if not trusted:
        return new
    sig = new.signature
    if sig is None:
        raise SigningError(f"trust set {new.serial} is not signed")
    public = trusted.get(str(sig.get("key_id")))
    if public is None:
        raise SigningError(
            f"trust set {new.serial} is signed by key {sig.get('key_id')}, which this device"
            " does not trust"
        )
    if not _verify(public, str(sig.get("sig")), trust_payload(new.serial, new.require, new.keys)):
        raise SigningError(f"trust set {new.serial}: the signature does not verify")
    return new


def advance_chain(
    current: TrustSet, chain: Sequence[Any], pinned: Iterable[str] = ()
) -> tuple[TrustSet, list[str]]:
    """Apply trust sets in serial order; returns the result and why any was refused (a set
    refused stops the chain: the sets after it were signed on its authority)."""
    sets = []
    problems: list[str] = []
    for doc in chain[:MAX_CHAIN]:
        try:
            sets.append(parse_trust_set(doc))
        except SigningError as exc:
            problems.append(str(exc))
    state = current
    for s in sorted(sets, key=lambda s: s.serial):
        try:
            state = advance(state, s.to_dict(), pinned)
        except SigningError as exc:
            problems.append(str(exc))
            break
    return state, problems


# ---------------------------------------------------------------- the agent's decision


@dataclass(frozen=True)
class Verdict:
    """``ok``: run it. Otherwise ``reason`` says why not, in words an operator can act on."""

    ok: bool
    reason: str | None = None
    key_id: str | None = None  # the key whose signature verified
    problems: tuple[str, ...] = field(default=())


def _image_changes(spec: Mapping[str, Any], claimed: Any) -> list[str]:
    """Containers whose image differs from the one the signature block names: a tag that
    was resolved again to another digest, or a digest stripped or swapped."""
    if not isinstance(claimed, Mapping):
        return []
    out = []
    for c in spec.get("containers") or []:
        if not isinstance(c, Mapping):
            continue
        was, now = claimed.get(c.get("name")), c.get("image")
        if not isinstance(was, str) or not isinstance(now, str) or was == now:
            continue
        name = c.get("name")
        was_ref, _, was_digest = was.partition("@")
        now_ref, _, now_digest = now.partition("@")
        if was_ref == now_ref and now_digest:
            out.append(f"{name}: {now_ref} now names {now_digest}, but {was_digest} was signed")
        elif was_ref == now_ref:
            out.append(f"{name}: the signed digest {was_digest} of {now_ref} was removed")
        else:
            out.append(f"{name}: image {now} is not the signed {was}")
    return out


def verify_bundle(
    spec: Mapping[str, Any] | None,
    signatures: Sequence[Any],
    trust: TrustSet,
    pinned: Iterable[str] = (),
    require: bool | None = None,
) -> Verdict:
    """Whether a device may run this desired spec. ``require`` (the agent's config) wins
    over the trust set's own ``require`` when given. "Run no bundle" (``spec is None``)
    needs no signature: it starts nothing."""
    if spec is None:
        return Verdict(True)
    must = trust.require if require is None else require
    keys = {key_id(k): k for k in (*trust.keys, *pinned)}
    sigs = [s for s in signatures if isinstance(s, Mapping)][:MAX_SIGNATURES]
    if not sigs:
        if must:
            return Verdict(
                False, "the bundle is not signed, and this device requires signed bundles"
            )
        return Verdict(True)
    try:
        model = from_dict(dict(spec))
    except BundleError as exc:
        return Verdict(False, f"the bundle is invalid: {exc}")
    payload = bundle_payload(model)
    known = [s for s in sigs if s.get("key_id") in keys]
    if not known and not must:
        # Signatures this device cannot check, on a fleet that runs unsigned bundles: as if
        # unsigned (a hub could strip them anyway). One by a trusted key must verify.
        return Verdict(True)
    if not known:
        ids = ", ".join(sorted(str(s.get("key_id")) for s in sigs))
        return Verdict(
            False, f"the bundle is signed by unknown key {ids}, not one this device trusts"
        )
    for s in known:
        if s.get("alg", ALG) == ALG and _verify(keys[str(s["key_id"])], str(s.get("sig")), payload):
            loose = unpinned_images(model)
            if loose:  # sign_bundle never makes one; a foreign signer might
                return Verdict(
                    False, "a signed bundle must pin every image by digest: " + ", ".join(loose)
                )
            return Verdict(True, key_id=str(s["key_id"]))
    changes = [c for s in known for c in _image_changes(spec, s.get("images"))]
    if changes:
        return Verdict(
            False,
            "the bundle was altered after signing (" + "; ".join(dict.fromkeys(changes)) + ")",
        )
    return Verdict(False, "the bundle was altered after signing: its signature does not verify")
