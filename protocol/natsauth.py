"""NATS decentralized auth, the parts every side needs: nkeys, the JWT claim encoder, the
``.creds`` file format and the login options for nats-py (docs/security.md "Device identity").

A NATS JWT is ``base64url(header).base64url(claims).base64url(signature)`` with the header
``{"typ":"JWT","alg":"ed25519-nkey"}``; the signature is the issuer nkey's ed25519 signature of
the first two parts joined by a dot. The claims' ``jti`` is the base32 of the SHA-512/256 of
the claims without it, as nats-io/jwt makes it. Written here (about 40 lines) rather than taken
from a library: the only Python NATS JWT library on PyPI is unmaintained and does not know the
v2 claims (scoped signing keys, revocations) the hub needs; ``nkeys`` (nats-io) does the
signing.

Two kinds of login use JWTs:

- a device: its own nkey (the seed is made on the device and never leaves it) and a user JWT
  the hub signs; nats-server checks the JWT's chain and the device's signature of its nonce;
- the shared logins (the hub's own, the operators', the enrollment bootstrap) are *bearer*
  JWTs: nats-server checks the chain but asks for no nonce signature, so the JWT is the whole
  secret, exactly as the password it replaces, and travels where the password did (the
  ``user:secret@`` of a hub URL). ``auth_options`` turns such a secret into nats-py options.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from protocol.enroll import USER_KEY_RE, EnrollReply

# nkeys, PyNaCl and hashlib (OpenSSL) are imported where a key is used, not with this module:
# the operator CLI imports it to connect, and `signalbeam --help` must stay light
# (tests/integration/test_cli_manners.py).

JWT_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
# A JWT as nats-io writes one: three base64url parts, the first always this header's.
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

PREFIXES = {
    "operator": "PREFIX_BYTE_OPERATOR",
    "account": "PREFIX_BYTE_ACCOUNT",
    "user": "PREFIX_BYTE_USER",
}


class AuthError(ValueError):
    """A key, JWT or creds file that is not what it must be."""


def _nkeys() -> Any:
    import nkeys

    return nkeys


def new_seed(kind: str = "user") -> str:
    """A new nkey seed (``S…``) of ``kind`` (operator, account, user), 256 random bits."""
    nk = _nkeys()
    return str(nk.encode_seed(os.urandom(32), getattr(nk, PREFIXES[kind])).decode())


def public_key(seed: str) -> str:
    return str(_nkeys().from_seed(bytearray(seed.encode())).public_key.decode())


def sign(seed: str, data: bytes) -> bytes:
    return bytes(_nkeys().from_seed(bytearray(seed.encode())).sign(data))


def verify(public: str, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public``'s ed25519 signature of ``data``."""
    import nacl.exceptions
    import nacl.signing

    try:
        raw = base64.b32decode(public + "=" * (-len(public) % 8))
    except (binascii.Error, ValueError):
        return False
    if len(raw) != 35:  # prefix byte, 32 key bytes, 2 CRC bytes
        return False
    try:
        nacl.signing.VerifyKey(raw[1:33]).verify(data, signature)
    except (nacl.exceptions.BadSignatureError, ValueError):
        return False
    return True


def valid_user_key(value: object) -> bool:
    return isinstance(value, str) and USER_KEY_RE.fullmatch(value) is not None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(claims: dict[str, Any], issuer_seed: str, *, now: int | None = None) -> str:
    """Sign ``claims`` (``sub``, ``name``, ``nats``, optionally ``exp``) as ``issuer_seed``:
    ``iss``, ``iat`` and ``jti`` are filled in here."""
    import hashlib

    doc = dict(claims)
    doc["iss"] = public_key(issuer_seed)
    doc["iat"] = int(time.time()) if now is None else now
    doc.pop("jti", None)
    digest = hashlib.new("sha512_256", json.dumps(doc, separators=(",", ":")).encode()).digest()
    doc["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = _b64(json.dumps(JWT_HEADER, separators=(",", ":")).encode())
    body = _b64(json.dumps(doc, separators=(",", ":")).encode())
    sig = sign(issuer_seed, f"{head}.{body}".encode())
    return f"{head}.{body}.{_b64(sig)}"


def is_jwt(value: object) -> bool:
    return isinstance(value, str) and _JWT_RE.fullmatch(value) is not None


def claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, *not verified* (for its own holder: expiry, subject)."""
    if not is_jwt(token):
        raise AuthError("not a NATS JWT")
    try:
        doc = json.loads(_unb64(token.split(".")[1]))
    except (ValueError, binascii.Error) as exc:
        raise AuthError(f"unreadable JWT claims: {exc}") from None
    if not isinstance(doc, dict):
        raise AuthError("JWT claims are not an object")
    return doc


def verified_claims(token: str, issuers: set[str]) -> dict[str, Any]:
    """The claims of a JWT signed by one of ``issuers`` (public keys), else ``AuthError``."""
    doc = claims(token)
    head, body, sig = token.split(".")
    if doc.get("iss") not in issuers or not verify(
        str(doc["iss"]), f"{head}.{body}".encode(), _unb64(sig)
    ):
        raise AuthError("JWT not signed by a trusted key")
    return doc


def expiry(token: str) -> float | None:
    """The JWT's ``exp`` (Unix seconds), None when it never expires."""
    exp = claims(token).get("exp")
    return float(exp) if isinstance(exp, int | float) and exp > 0 else None


# ---------------------------------------------------------------- creds files

_CREDS = """-----BEGIN NATS USER JWT-----
{jwt}
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
{seed}
------END USER NKEY SEED------

*************************************************************
"""


def creds_text(jwt: str, seed: str) -> str:
    """The decorated ``.creds`` format nats-server (leaf remotes' ``credentials``) and
    nats-py (``user_credentials``) read."""
    return _CREDS.format(jwt=jwt, seed=seed)


# ---------------------------------------------------------------- logins


def bearer_options(token: str) -> dict[str, Any]:
    """nats-py options for a bearer JWT: the JWT, and an empty nonce signature (nats-server
    asks none of a bearer JWT)."""
    encoded = token.encode()

    def user_jwt() -> bytearray:
        return bytearray(encoded)

    def signature(_nonce: str) -> bytes:
        return b""

    return {"user_jwt_cb": user_jwt, "signature_cb": signature}


def device_options(jwt: Callable[[], str], seed: Callable[[], str]) -> dict[str, Any]:
    """nats-py options for a device login: its current JWT and the nonce signed with its
    nkey, both read at every (re)connect, so a renewed JWT is used from the next one on."""

    def user_jwt() -> bytearray:
        return bytearray(jwt().encode())

    def signature(nonce: str) -> bytes:
        return base64.b64encode(sign(seed(), nonce.encode()))

    return {"user_jwt_cb": user_jwt, "signature_cb": signature}


def enrolled_login(creds: EnrollReply) -> dict[str, Any]:
    """nats-py options for a device's own login from its enrollment reply: its JWT and
    device-made nkey (a JWT-mode hub), or its user and password. For clients that log in as
    a device straight from the reply (the simulator, benches, tests); the agent keeps the
    JWT in its renewer and reads it at every connect."""
    if creds.nats_jwt:
        return device_options(lambda: creds.nats_jwt, lambda: creds.nats_seed)
    return {"user": creds.nats_user, "password": creds.nats_password}


def auth_options(url: str, password: str | None = None) -> dict[str, Any]:
    """nats-py options for a login whose secret is a bearer JWT, given either in the URL's
    password (``nats://operator:<jwt>@host:port``) or as ``password``; ``{}`` for a plain
    password login (nats-py sends user and password itself)."""
    secret = password
    if secret is None:
        try:
            secret = urlsplit(url).password
        except ValueError:
            secret = None
        secret = unquote(secret) if secret else None
    return bearer_options(secret) if secret and is_jwt(secret) else {}


_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def redact_url(url: str) -> str:
    """``url`` for a message or a log line, its login secret replaced by ``***``: the
    password of ``user:password@`` (kept: the user), or a whole ``token@``. Never parses
    the URL (a malformed one, the kind an error is about, must not raise here) and takes
    everything up to the *last* ``@`` as the login, so a password with an unencoded ``@``,
    or a URL without a scheme, leaks no part of it."""
    scheme = m.group(0) if (m := _SCHEME_RE.match(url)) else ""
    login, at, host = url[len(scheme) :].rpartition("@")
    if not at:
        return url
    user, colon, _ = login.partition(":")
    return f"{scheme}{user}:***@{host}" if colon else f"{scheme}***@{host}"


def split_urls(value: str) -> list[str]:
    """The URLs of a comma-separated list (the CLI's several hub URLs). A URL's password
    should be percent-encoded (what ``signalbeam-hub init`` prints), but one typed with a
    comma must not come apart into a piece holding the password's head with no ``@`` (which
    no redaction can tell from a host) and one holding its tail: a piece with a login and
    no scheme after a piece with no login is the rest of that piece."""
    urls: list[str] = []
    for piece in (p.strip() for p in value.split(",")):
        if not piece:
            continue
        if urls and "@" in piece and "@" not in urls[-1] and not _SCHEME_RE.match(piece):
            urls[-1] = f"{urls[-1]},{piece}"
        else:
            urls.append(piece)
    return urls
