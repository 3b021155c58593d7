"""Enrollment: ``sb.hub.enroll``, request ``EnrollRequest``, reply ``EnrollReply`` or the
error shape (``protocol.errors``)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from protocol import SCHEMA_VERSION
from protocol.codec import Fields, dumps, load, load_reply
from protocol.errors import MessageError

MAX_ENROLL_BYTES = 16 * 1024
MAX_TAGS = 32
MAX_TAG_LEN = 63

# The hub's rule for tag and group names (lower case, so `Lab` and `lab` never differ).
_TAG_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


@dataclass(frozen=True)
class DeviceFacts:
    hostname: str
    arch: str
    os: str
    engine: str  # "docker", "podman" or "unknown"
    agent_version: str

    def to_dict(self) -> dict[str, str]:
        return {
            "hostname": self.hostname,
            "arch": self.arch,
            "os": self.os,
            "engine": self.engine,
            "agent_version": self.agent_version,
        }


# The device's own NATS password, made by the enrolling device and sent in the request (only
# the hub can read ``sb.hub.enroll``), so the reply, which every enrolling device's shared
# bootstrap login can see, carries no secret. URL-safe (it goes in the leaf URL) and at most
# 72 bytes (bcrypt reads no further); at least 32 characters (>= 192 random bits as the agent
# makes it: ``secrets.token_urlsafe(32)``, 43 characters).
_DEVICE_PASSWORD_RE = re.compile(r"[A-Za-z0-9_-]{32,72}")


# A NATS user's public nkey: "U" and 55 base32 characters (protocol.natsauth uses it too).
USER_KEY_RE = re.compile(r"U[A-Z2-7]{55}")
_SEAL_KEY_RE = re.compile(r"[A-Za-z0-9+/]{43}=")


def valid_device_password(password: object) -> bool:
    return isinstance(password, str) and _DEVICE_PASSWORD_RE.fullmatch(password) is not None


@dataclass(frozen=True)
class EnrollRequest:
    token: str = field(repr=False)
    device_id: str
    facts: DeviceFacts
    tags: tuple[str, ...] = ()
    # Required by the hub since issue 19; "" only to decode an older agent's request, which
    # the hub then refuses with a message naming the fix.
    nats_password: str = field(default="", repr=False)
    # The device's own public nkey (issue 16): a hub in JWT mode signs a user JWT for it; a
    # hub in password mode ignores it. The seed stays on the device.
    nats_public_key: str = ""
    # The device's X25519 public key (base64): the hub seals its secrets to it
    # (sbutil.seal). "" from an agent from before secrets: it can get none.
    seal_key: str = ""

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "token": self.token,
            "device_id": self.device_id,
            "facts": self.facts.to_dict(),
            "tags": list(self.tags),
        }
        if self.nats_password:
            doc["nats_password"] = self.nats_password
        if self.nats_public_key:
            doc["nats_public_key"] = self.nats_public_key
        if self.seal_key:
            doc["seal_key"] = self.seal_key
        return dumps(doc)


def _tags(doc: Fields) -> tuple[str, ...]:
    out = []
    for i, t in enumerate(doc.list_("tags", required=False, max_len=MAX_TAGS) or []):
        if not isinstance(t, str) or not _TAG_RE.fullmatch(t):
            raise MessageError(
                f"tags[{i}]",
                f"must be 1-{MAX_TAG_LEN} characters of a-z 0-9 . _ - (starting with a-z or 0-9)",
            )
        out.append(t)
    return tuple(out)


def validate_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Tags as the enrollment request carries them (for CLI input), or ``MessageError``."""
    return _tags(Fields({"tags": list(tags)}, ""))


def decode_enroll_request(data: bytes | str) -> EnrollRequest:
    doc = Fields(load(data, MAX_ENROLL_BYTES), "")
    facts = doc.obj("facts")
    assert facts is not None
    return EnrollRequest(
        token=doc.str_("token", max_len=512),
        device_id=doc.device_id(),
        facts=DeviceFacts(
            hostname=facts.str_("hostname", max_len=255),
            arch=facts.str_("arch", max_len=64),
            os=facts.str_("os", max_len=255),
            engine=facts.str_("engine", max_len=32),
            agent_version=facts.str_("agent_version", max_len=64),
        ),
        tags=_tags(doc),
        nats_password=doc.str_(
            "nats_password",
            required=False,
            max_len=72,
            pattern=_DEVICE_PASSWORD_RE,
            what="32-72 characters of A-Z a-z 0-9 _ - (the device's new NATS password)",
        )
        or "",
        nats_public_key=doc.str_(
            "nats_public_key",
            required=False,
            max_len=56,
            pattern=USER_KEY_RE,
            what="a NATS user public nkey (U and 55 base32 characters)",
        )
        or "",
        seal_key=doc.str_(
            "seal_key",
            required=False,
            max_len=44,
            pattern=_SEAL_KEY_RE,
            what="the base64 of a 32-byte X25519 public key",
        )
        or "",
    )


@dataclass(frozen=True)
class EnrollReply:
    """The device's own NATS credentials and where its leaf links to.

    ``leaf_url`` is the hub's leafnode URL (``nats-leaf://host:port``) for the device's leaf
    server; ``hub_url`` the client URL for a device configured without a leaf.
    ``nats_password`` is never in the hub's reply (the device made it and sent it); it is in
    the device's credentials file, which holds the same document with it filled in.
    """

    device_id: str
    nats_user: str
    nats_password: str = field(repr=False)
    leaf_url: str
    hub_url: str | None = None
    js_domain: str = "hub"
    # The fleet's trust set when the device enrolled (``bundles.signing.TrustSet.to_dict()``):
    # the bundle-signing public keys and whether unsigned bundles are refused. Taken on trust
    # like the registration token; later changes must be signed (docs/security.md). None: a
    # hub from before signed bundles (the device then requires nothing).
    trust: dict[str, Any] | None = None
    # JWT mode (issue 16): the user JWT the hub signed for the device's key (no secret: it
    # is useless without the seed). ``nats_seed`` is never in a reply: the agent keeps it in
    # its own credentials file only (0600).
    nats_jwt: str = field(default="", repr=False)
    nats_seed: str = field(default="", repr=False)
    # The bootstrap login's URL (with its secret), kept by the agent so it can renew a JWT
    # that expired while it was offline; never in a reply.
    bootstrap_url: str = field(default="", repr=False)
    # A hub NATS cluster: every node's leafnode and client URL (``leaf_url``/``hub_url`` are
    # the first, for agents from before clusters). Empty from a single-server hub. The
    # device's leaf lists them all as its remote's URLs and fails over between them.
    leaf_urls: tuple[str, ...] = ()
    hub_urls: tuple[str, ...] = ()

    def all_leaf_urls(self) -> list[str]:
        """``leaf_url`` first, then the cluster's other nodes."""
        return [self.leaf_url, *(u for u in self.leaf_urls if u != self.leaf_url)]

    def all_hub_urls(self) -> list[str]:
        first = [self.hub_url] if self.hub_url else []
        return [*first, *(u for u in self.hub_urls if u != self.hub_url)]

    @property
    def jwt_auth(self) -> bool:
        return bool(self.nats_jwt)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "device_id": self.device_id,
            "nats_user": self.nats_user,
            "leaf_url": self.leaf_url,
            "hub_url": self.hub_url,
            "js_domain": self.js_domain,
        }
        if self.nats_password:
            doc["nats_password"] = self.nats_password
        if self.trust is not None:
            doc["trust"] = self.trust
        for key in ("nats_jwt", "nats_seed", "bootstrap_url"):
            if getattr(self, key):
                doc[key] = getattr(self, key)
        for key in ("leaf_urls", "hub_urls"):
            if getattr(self, key):
                doc[key] = list(getattr(self, key))
        return dumps(doc)


def decode_enroll_reply(data: bytes | str) -> EnrollReply:
    """An ``EnrollReply``, or ``RemoteError`` when the hub answered with the error shape."""
    doc = Fields(load_reply(data, MAX_ENROLL_BYTES), "")
    leaf_url = doc.str_("leaf_url", max_len=512)
    if not leaf_url.startswith(LEAF_SCHEMES):
        raise MessageError("leaf_url", "must be a nats-leaf://, nats://, tls:// or ws(s):// URL")
    hub_url = doc.str_("hub_url", required=False, max_len=512)
    return EnrollReply(
        device_id=doc.device_id(),
        nats_user=doc.str_("nats_user", max_len=128),
        nats_password=doc.str_("nats_password", required=False, max_len=512) or "",
        leaf_url=leaf_url,
        hub_url=hub_url,
        js_domain=doc.str_("js_domain", required=False, max_len=64) or "hub",
        trust=_trust_field(doc.doc.get("trust")),
        nats_jwt=doc.str_("nats_jwt", required=False, max_len=8192) or "",
        nats_seed=doc.str_("nats_seed", required=False, max_len=128) or "",
        bootstrap_url=doc.str_("bootstrap_url", required=False, max_len=8192) or "",
        leaf_urls=_urls(doc, "leaf_urls", LEAF_SCHEMES),
        hub_urls=_urls(doc, "hub_urls", ("nats://", "tls://", "ws://", "wss://")),
    )


LEAF_SCHEMES = ("nats-leaf://", "nats://", "tls://", "ws://", "wss://")
MAX_NODES = 16


def _urls(doc: Fields, key: str, schemes: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for i, url in enumerate(doc.list_(key, required=False, max_len=MAX_NODES) or []):
        if not isinstance(url, str) or len(url) > 512 or not url.startswith(schemes):
            raise MessageError(f"{key}[{i}]", f"must be a {', '.join(schemes)} URL")
        out.append(url)
    return tuple(out)


def _trust_field(value: Any) -> dict[str, Any] | None:
    # Its contents are checked where they are used (bundles.signing.parse_trust_set), so a
    # malformed set is one refused trust set there, not an enrollment that cannot be read.
    if value is not None and not isinstance(value, dict):
        raise MessageError("trust", "must be an object or null")
    return value
