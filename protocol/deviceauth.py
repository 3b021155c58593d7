"""Device JWT renewal (JWT mode, docs/security.md "Device identity").

Over the device's own link (``sb.dev.<id>.auth.challenge`` then ``.auth.renew``) or, once its
JWT has expired and the link refuses it, through the bootstrap login
(``sb.hub.renew.challenge`` then ``sb.hub.renew.jwt``, the device id in the body). The hub
answers a challenge with a single-use nonce; the renewal carries the nonce signed with the
device's nkey; the hub checks the signature against the key it enrolled (never the token
again) and answers a new JWT, or the error shape (``protocol.errors``). ``public_key`` is
set only by a password-enrolled device moving to a key of its own, which only its own
(password) link may ask for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from protocol import SCHEMA_VERSION
from protocol.codec import Fields, dumps, load, load_reply
from protocol.enroll import USER_KEY_RE

MAX_AUTH_BYTES = 16 * 1024
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_SIG_RE = re.compile(r"[A-Za-z0-9_-]{40,200}")


@dataclass(frozen=True)
class AuthChallenge:
    device_id: str
    nonce: str = ""  # in the hub's answer

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {"v": SCHEMA_VERSION, "device_id": self.device_id}
        if self.nonce:
            doc["nonce"] = self.nonce
        return dumps(doc)


def decode_auth_challenge(data: bytes | str) -> AuthChallenge:
    doc = Fields(load_reply(data, MAX_AUTH_BYTES), "")
    return AuthChallenge(
        device_id=doc.device_id(),
        nonce=doc.str_("nonce", required=False, max_len=128, pattern=_NONCE_RE) or "",
    )


@dataclass(frozen=True)
class RenewRequest:
    device_id: str
    nonce: str
    signature: str  # base64url of the ed25519 signature of the nonce
    public_key: str = ""

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "device_id": self.device_id,
            "nonce": self.nonce,
            "sig": self.signature,
        }
        if self.public_key:
            doc["public_key"] = self.public_key
        return dumps(doc)


def decode_renew_request(data: bytes | str) -> RenewRequest:
    doc = Fields(load(data, MAX_AUTH_BYTES), "")
    return RenewRequest(
        device_id=doc.device_id(),
        nonce=doc.str_("nonce", max_len=128, pattern=_NONCE_RE, what="a nonce from the hub"),
        signature=doc.str_("sig", max_len=200, pattern=_SIG_RE, what="a base64url signature"),
        public_key=doc.str_(
            "public_key", required=False, max_len=56, pattern=USER_KEY_RE, what="a user nkey"
        )
        or "",
    )


@dataclass(frozen=True)
class RenewReply:
    device_id: str
    nats_jwt: str = field(repr=False)
    # The hub's current bootstrap login URL (with its secret): what renews a JWT that
    # expires while the device is offline. A password-enrolled device has none until its
    # migration reply hands it one, and a hub switched to JWT mode has a new one, so every
    # reply carries it and the agent keeps the latest. Absent from hubs before this field.
    bootstrap_url: str = field(default="", repr=False)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "device_id": self.device_id,
            "nats_jwt": self.nats_jwt,
        }
        if self.bootstrap_url:
            doc["bootstrap_url"] = self.bootstrap_url
        return dumps(doc)


def decode_renew_reply(data: bytes | str) -> RenewReply:
    doc = Fields(load_reply(data, MAX_AUTH_BYTES), "")
    return RenewReply(
        device_id=doc.device_id(),
        nats_jwt=doc.str_("nats_jwt", max_len=8192),
        bootstrap_url=doc.str_("bootstrap_url", required=False, max_len=8192) or "",
    )
