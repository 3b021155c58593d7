"""The device's JWT in JWT mode (docs/security.md "Device identity"): its creds file, and
renewing it before it expires.

The JWT is renewed at two thirds of its life (``renew_at``), over the device's own link:
ask the hub for a nonce (``sb.dev.<id>.auth.challenge``), sign it with the device's nkey,
send it back (``sb.dev.<id>.auth.renew``), get a new JWT. No registration token, no
password: only the key made at enrollment. A device offline past its JWT's expiry keeps
running what it has; its leaf cannot link any more (the hub refuses an expired JWT), so it
renews through the bootstrap login (``sb.hub.renew.*``) with the same signed nonce, and
its leaf links at its next try with the new file.

The new JWT goes to the credentials file (JSON, 0600) and the leaf's ``.creds`` file (0600)
before it is used; the seed is never sent anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from protocol import natsauth
from protocol.deviceauth import (
    AuthChallenge,
    RenewReply,
    RenewRequest,
    decode_auth_challenge,
    decode_renew_reply,
)
from protocol.enroll import EnrollReply
from protocol.subjects import INBOX_ENROLL, RENEW_CHALLENGE, RENEW_JWT, device_auth

log = logging.getLogger(__name__)

RENEW_FRACTION = 2 / 3
RETRY = 5.0  # seconds between failed renewal attempts
REQUEST_TIMEOUT = 10.0


def renew_at(token: str) -> float:
    """When to renew: two thirds into the JWT's life (never for one that does not expire)."""
    doc = natsauth.claims(token)
    exp = doc.get("exp")
    iat = doc.get("iat")
    if not isinstance(exp, int | float) or exp <= 0:
        return float("inf")
    start = float(iat) if isinstance(iat, int | float) else float(exp)
    return start + (float(exp) - start) * RENEW_FRACTION


def expired(token: str, now: float | None = None) -> bool:
    exp = natsauth.expiry(token)
    return exp is not None and (time.time() if now is None else now) >= exp


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_creds(path: Path, creds: EnrollReply) -> None:
    write_private(path, natsauth.creds_text(creds.nats_jwt, creds.nats_seed).encode())


def _signed(creds: EnrollReply, nonce: str, public_key: str = "") -> bytes:
    sig = natsauth.sign(creds.nats_seed, nonce.encode())
    return RenewRequest(
        creds.device_id,
        nonce,
        base64.urlsafe_b64encode(sig).rstrip(b"=").decode(),
        public_key,
    ).to_json()


async def renew_over(
    nc: NATS, creds: EnrollReply, *, own_link: bool, public_key: str = ""
) -> RenewReply:
    """One challenge + renewal; returns the hub's reply (raises on any failure).
    ``public_key``: a password-enrolled device moving to its own key (``creds.nats_seed``
    is its seed)."""
    if own_link:
        first, second = (
            device_auth(creds.device_id, "challenge"),
            device_auth(creds.device_id, "renew"),
        )
    else:
        first, second = RENEW_CHALLENGE, RENEW_JWT
    reply = await nc.request(first, AuthChallenge(creds.device_id).to_json(), REQUEST_TIMEOUT)
    nonce = decode_auth_challenge(reply.data).nonce
    if not nonce:
        raise ValueError("the hub's challenge carried no nonce")
    reply = await nc.request(second, _signed(creds, nonce, public_key), REQUEST_TIMEOUT)
    out = decode_renew_reply(reply.data)
    if out.device_id != creds.device_id:
        raise ValueError("the hub renewed another device's JWT")
    return out


def renewed(creds: EnrollReply, reply: RenewReply) -> EnrollReply:
    """The credentials with the new JWT, and the bootstrap URL the hub handed (a hub from
    before that field hands none: the one kept stays)."""
    return replace(
        creds, nats_jwt=reply.nats_jwt, bootstrap_url=reply.bootstrap_url or creds.bootstrap_url
    )


async def renew_via_bootstrap(creds: EnrollReply, ca_file: str | None = None) -> RenewReply:
    if not creds.bootstrap_url:
        raise ValueError("no bootstrap login kept: enroll again to renew")
    from protocol import natstls

    extra: dict[str, Any] = {}
    if ca_file is not None or natstls.wants_tls(creds.bootstrap_url):
        extra["tls"] = natstls.client_context(ca_file)
    nc = await nats.connect(
        creds.bootstrap_url,
        connect_timeout=REQUEST_TIMEOUT,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        inbox_prefix=INBOX_ENROLL,
        **natsauth.auth_options(creds.bootstrap_url),
        **extra,
    )
    try:
        return await renew_over(nc, creds, own_link=False)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def migrate(nc: NATS, creds: EnrollReply) -> EnrollReply:
    """A device enrolled with a password makes its own nkey and gets its first JWT over its
    own (password) link; it keeps the password until the hub no longer takes it. The reply's
    bootstrap URL is what renews its JWT after an expiry offline, as a JWT-enrolled device
    does (a password enrollment never kept one)."""
    seed = natsauth.new_seed("user")
    with_key = replace(creds, nats_seed=seed)
    reply = await renew_over(nc, with_key, own_link=True, public_key=natsauth.public_key(seed))
    return renewed(with_key, reply)


class JwtRenewer:
    """Keeps the device's JWT fresh; ``on_renewed`` is told of each new one."""

    def __init__(
        self,
        creds: EnrollReply,
        save: Callable[[EnrollReply], None],
        nc: Callable[[], NATS | None],
        *,
        ca_file: str | None = None,
        retry: float = RETRY,
    ) -> None:
        self.creds = creds
        self.save = save
        self.nc = nc
        self.ca_file = ca_file
        self.retry = retry
        self.renewed = 0
        self.failures = 0
        self._extra = {"device": creds.device_id}

    @property
    def jwt(self) -> str:
        return self.creds.nats_jwt

    async def renew_once(self) -> bool:
        """Try the own link first (while the JWT is valid), then the bootstrap login."""
        token: RenewReply | None = None
        errors = []
        nc = self.nc()
        if nc is not None and nc.is_connected and not expired(self.jwt):
            try:
                token = await renew_over(nc, self.creds, own_link=True)
            except Exception as exc:
                errors.append(f"own link: {exc}")
        if token is None:
            try:
                token = await renew_via_bootstrap(self.creds, self.ca_file)
            except Exception as exc:
                errors.append(f"bootstrap login: {exc}")
        if token is None:
            self.failures += 1
            log.warning("JWT renewal failed (%s)", "; ".join(errors), extra=self._extra)
            return False
        self.creds = renewed(self.creds, token)
        await asyncio.to_thread(self.save, self.creds)
        self.renewed += 1
        log.info("JWT renewed", extra=self._extra)
        return True

    async def run(self) -> None:
        while True:
            wait = renew_at(self.jwt) - time.time()
            if wait > 0:
                await asyncio.sleep(min(wait, 3600.0))
                continue
            if not await self.renew_once():
                await asyncio.sleep(self.retry)
