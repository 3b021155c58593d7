"""Device identity in JWT mode (``nats_auth = "jwt"``, docs/security.md "Device identity").

- ``issue``: a device's user JWT for the public nkey it enrolled (signed by the account's
  scoped device key, so its permissions are the device template's, nothing else);
- renewal: a device asks for a nonce (``sb.dev.<id>.auth.challenge``), signs it with its nkey
  and sends it back (``sb.dev.<id>.auth.renew``); the hub checks the signature against the key
  it enrolled and answers a new JWT. Its own link proves who it is (a device may publish only
  under ``sb.dev.<its id>``). A device whose JWT expired while it was offline cannot use that
  link any more: it asks the same through the bootstrap login (``sb.hub.renew.*``, the id in
  the body), where the signature alone proves it. A nonce is bound to the device id, lives
  ``NONCE_TTL`` s and is used up by the first renewal its device's key signed (a wrong
  signature uses up nothing); a decommissioned device gets nothing;
- migration: a device enrolled with a password (its own password login proves it) may send
  its new public key once, with the nonce signed by it, and gets its first JWT;
- ``revoke``: a decommissioned device's key goes into the account JWT's revocations, pushed
  through the system account (``$SYS.REQ.ACCOUNT.<acc>.CLAIMS.UPDATE``); nats-server closes
  its connections at once ("Credentials Revoked") and refuses every JWT issued to that key
  up to then. No config rewrite, no reload.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hub import natsjwt
from hub.metrics import HubMetrics
from hub.natsjwt import HubKeys
from hub.store import Store
from protocol import natsauth
from protocol.deviceauth import (
    AuthChallenge,
    RenewReply,
    decode_auth_challenge,
    decode_renew_request,
)
from protocol.errors import INVALID, NOT_FOUND, UNAVAILABLE, MessageError
from protocol.rpc import rpc_error
from protocol.subjects import (
    DEVICE_AUTH_WILDCARD,
    RENEW_CHALLENGE,
    RENEW_JWT,
    account_claims_update,
    device_from_subject,
)

log = logging.getLogger(__name__)

NONCE_TTL = 60.0
MAX_NONCES = 100_000  # used nonces kept (expired ones dropped first)
UNAUTHORIZED = "unauthorized"
StoreCall = Callable[..., Awaitable[Any]]


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class DeviceAuth:
    def __init__(
        self,
        nc: NATS,
        sys_nc: NATS | None,
        store: Store,
        call: StoreCall,
        metrics: HubMetrics,
        keys: HubKeys,
        *,
        ttl: int = natsjwt.DEVICE_JWT_TTL,
        bootstrap_url: str = "",
        partitions: int = 1,
    ) -> None:
        self.nc = nc
        self.sys_nc = sys_nc
        self.store = store
        self.call = call
        self.metrics = metrics
        self.keys = keys
        self.ttl = ttl
        self.bootstrap_url = bootstrap_url
        # Hub workers: the account JWT carries their heartbeat mapping (natsjwt).
        self.partitions = partitions
        # Nonces are checked by their MAC (``_nonce``); only the used ones are kept, until
        # they expire.
        self._nonce_key = secrets.token_bytes(32)
        self._used: dict[str, float] = {}
        self._subs: list[Subscription] = []
        self._push_lock = asyncio.Lock()
        self._last_iat = 0

    # ---------------------------------------------------------------- issuing

    def issue(self, device_id: str, public_key: str) -> str:
        return natsjwt.device_jwt(self.keys, device_id, public_key, ttl=self.ttl)

    # ---------------------------------------------------------------- revocation

    async def push_account(self) -> None:
        """Sign the account JWT with the current revocations and push it to nats-server.
        Each push gets a later ``iat`` than the last one (the resolver keeps the newer)."""
        if self.sys_nc is None:
            return
        async with self._push_lock:
            revocations = await self.call(self.store.revocations)
            iat = max(int(time.time()), self._last_iat + 1)
            self._last_iat = iat
            token = natsjwt.account_jwt(self.keys, revocations, now=iat, partitions=self.partitions)
            subject = account_claims_update(self.keys.account_public)
            reply = await self.sys_nc.request(subject, token.encode(), timeout=10)
            if b'"error"' in reply.data:
                raise RuntimeError(f"nats-server refused the account JWT: {reply.data[:300]!r}")

    async def revoke(self, device_id: str) -> None:
        # The revocation covers JWTs issued up to this second: a JWT issued in the same
        # second as the decommission is refused too.
        key = await self.call(self.store.revoke_device, device_id, int(time.time()))
        if key is None:
            return
        await self.push_account()
        self.metrics.device_jwt.labels("revoked").inc()
        log.info("device key revoked", extra={"device": device_id})

    # ---------------------------------------------------------------- renewal

    async def start(self) -> None:
        self._subs = [
            await self.nc.subscribe(DEVICE_AUTH_WILDCARD, cb=self._on_own_link),
            await self.nc.subscribe(RENEW_CHALLENGE, cb=self._on_bootstrap_challenge),
            await self.nc.subscribe(RENEW_JWT, cb=self._on_bootstrap_renew),
        ]

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:
                pass
        self._subs = []

    def _nonce(self, device_id: str) -> str:
        """A new nonce for ``device_id``: its expiry (monotonic ms), a random part and a MAC
        (keyed by this process) over the device id, the expiry and the random part, all in
        the wire's nonce alphabet (``protocol.deviceauth``). The hub keeps no table of nonces
        it handed out, so someone holding the bootstrap login who asks challenges for a
        device, however many, cannot push out the one that device is about to answer
        (tests/integration/test_redteam_renewal.py)."""
        expiry = str(int((time.monotonic() + NONCE_TTL) * 1000))
        rand = secrets.token_urlsafe(16)  # 22 characters
        return f"{expiry}{rand}{self._nonce_mac(device_id, expiry, rand)}"

    def _nonce_mac(self, device_id: str, expiry: str, rand: str) -> str:
        mac = hmac.digest(self._nonce_key, f"{device_id}\n{expiry}\n{rand}".encode(), "sha256")
        return base64.urlsafe_b64encode(mac[:16]).rstrip(b"=").decode()  # 22 characters

    def _live_nonce(self, device_id: str, nonce: str) -> float | None:
        """The expiry of ``nonce`` if this process made it for ``device_id``, it has not
        expired and no renewal has used it; None otherwise. Nothing is used up here."""
        expiry, rand, mac = nonce[:-44], nonce[-44:-22], nonce[-22:]
        if not expiry.isascii() or not expiry.isdigit():
            return None
        until = int(expiry) / 1000
        if not secrets.compare_digest(mac, self._nonce_mac(device_id, expiry, rand)):
            return None
        if until <= time.monotonic() or nonce in self._used:
            return None
        return until

    def _use_nonce(self, nonce: str, until: float) -> None:
        """``nonce`` took part in a renewal its device's key signed: never again. Only a
        verified signature uses one up, so a nonce read on the bootstrap login's shared
        inbox and sent back with another signature leaves the device's own answer valid."""
        now = time.monotonic()
        if len(self._used) >= MAX_NONCES:
            self._used = {n: t for n, t in self._used.items() if t > now}
        self._used[nonce] = until

    async def _on_own_link(self, msg: Msg) -> None:
        device_id = device_from_subject(msg.subject)
        step = msg.subject.rsplit(".", 1)[-1]
        if not msg.reply or device_id is None:
            return
        if step == "challenge":
            await self._respond(msg, AuthChallenge(device_id, self._nonce(device_id)).to_json())
        elif step == "renew":
            await self._respond(msg, await self._renew(device_id, msg.data, own_link=True))

    async def _on_bootstrap_challenge(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            device_id = decode_auth_challenge(msg.data).device_id
        except (MessageError, Exception) as exc:
            await self._respond(msg, rpc_error(INVALID, f"bad challenge request: {exc}"))
            return
        await self._respond(msg, AuthChallenge(device_id, self._nonce(device_id)).to_json())

    async def _on_bootstrap_renew(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            device_id = decode_renew_request(msg.data).device_id
        except MessageError as exc:
            await self._respond(msg, rpc_error(INVALID, f"{exc.field}: {exc.message}", exc.field))
            return
        await self._respond(msg, await self._renew(device_id, msg.data, own_link=False))

    async def _respond(self, msg: Msg, body: bytes) -> None:
        try:
            await msg.respond(body)
        except Exception as exc:
            log.warning("could not answer a device auth request: %s", exc)

    async def _renew(self, device_id: str, data: bytes, *, own_link: bool) -> bytes:
        try:
            req = decode_renew_request(data)
        except MessageError as exc:
            return rpc_error(INVALID, f"{exc.field}: {exc.message}", exc.field)
        if req.device_id != device_id:
            # A device may speak only for itself, also inside the body.
            self.metrics.device_jwt.labels("refused").inc()
            return rpc_error(UNAUTHORIZED, "the request names another device", "device_id")
        until = self._live_nonce(device_id, req.nonce)
        if until is None:
            self.metrics.device_jwt.labels("refused").inc()
            return rpc_error(UNAUTHORIZED, "unknown or expired nonce; ask a new challenge")
        try:
            signature = _unb64(req.signature)
        except (binascii.Error, ValueError):
            return rpc_error(INVALID, "sig is not base64url", "sig")
        key = await self.call(self.store.device_key, device_id)
        migrating = False
        if req.public_key and own_link and req.public_key != key:
            # A password-enrolled device moving to its own key (again, if it lost the first
            # one before saving its JWT): its password login, the link this came over,
            # proves who it is; a key it replaces is revoked.
            if await self.call(self.store.device_password_hash, device_id) is None:
                self.metrics.device_jwt.labels("refused").inc()
                return rpc_error(UNAUTHORIZED, "that is not the key this device enrolled")
            key, migrating = req.public_key, True
        if key is None:
            self.metrics.device_jwt.labels("refused").inc()
            return rpc_error(NOT_FOUND, f"device {device_id!r} has no key to renew")
        if req.public_key and req.public_key != key:
            self.metrics.device_jwt.labels("refused").inc()
            return rpc_error(UNAUTHORIZED, "that is not the key this device enrolled")
        if not natsauth.verify(key, req.nonce.encode(), signature):
            self.metrics.device_jwt.labels("refused").inc()
            log.warning("device JWT renewal with a bad signature", extra={"device": device_id})
            return rpc_error(UNAUTHORIZED, "the signature does not match the device's key")
        if req.nonce in self._used:
            # Another renewal with this nonce finished while this one awaited the store.
            self.metrics.device_jwt.labels("refused").inc()
            return rpc_error(UNAUTHORIZED, "unknown or expired nonce; ask a new challenge")
        self._use_nonce(req.nonce, until)
        if migrating:
            await self.call(self._add_key, device_id, key)
            log.info("password-enrolled device moved to its own nkey", extra={"device": device_id})
        token = self.issue(device_id, key)
        self.metrics.device_jwt.labels("migrated" if migrating else "renewed").inc()
        log.info(
            "device JWT %s (%s)",
            "issued" if migrating else "renewed",
            "own link" if own_link else "bootstrap login",
            extra={"device": device_id},
        )
        # The bootstrap URL in every reply: a migrated device gets the one it never had at
        # enrollment, and every device the new one after a switch to JWT mode.
        return RenewReply(device_id, token, self.bootstrap_url).to_json()

    def _add_key(self, device_id: str, key: str) -> None:
        self.store.set_device_key(device_id, key, int(time.time()), keep_password=True)

    def unavailable(self) -> bytes:
        return rpc_error(UNAVAILABLE, "device auth is not running")
