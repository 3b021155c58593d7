"""protocol.natsauth (nkeys, the JWT claim encoder, creds files, login options) and the hub's
claims (hub.natsjwt), and the renewal nonces (hub.sync.deviceauth): pure parts. nats-server
itself checks them in tests/integration/test_jwt_auth.py."""

from __future__ import annotations

import base64
import json
from typing import Any, cast

import pytest

from hub import natsjwt
from hub.sync.deviceauth import DeviceAuth
from protocol import natsauth
from protocol.deviceauth import _NONCE_RE


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = token.split(".")
    pad = lambda t: t + "=" * (-len(t) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(head))),
        json.loads(base64.urlsafe_b64decode(pad(body))),
    )


def test_a_jwt_is_signed_by_its_issuer_and_nobody_else() -> None:
    issuer = natsauth.new_seed("account")
    token = natsauth.encode({"sub": "x", "nats": {"type": "user"}}, issuer, now=1000)
    head, claims = _parts(token)
    assert head == {"typ": "JWT", "alg": "ed25519-nkey"}
    assert claims["iss"] == natsauth.public_key(issuer) and claims["iat"] == 1000
    assert claims["jti"]
    assert natsauth.verified_claims(token, {natsauth.public_key(issuer)})["sub"] == "x"
    with pytest.raises(natsauth.AuthError):
        natsauth.verified_claims(token, {natsauth.public_key(natsauth.new_seed("account"))})
    # A changed claim breaks the signature.
    head_b64, body_b64, sig = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(body_b64 + "=" * (-len(body_b64) % 4)))
    forged["sub"] = "y"
    body2 = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(natsauth.AuthError):
        natsauth.verified_claims(f"{head_b64}.{body2}.{sig}", {natsauth.public_key(issuer)})


def test_keys_sign_and_verify() -> None:
    seed = natsauth.new_seed("user")
    pub = natsauth.public_key(seed)
    assert natsauth.valid_user_key(pub) and seed.startswith("SU")
    sig = natsauth.sign(seed, b"nonce")
    assert natsauth.verify(pub, b"nonce", sig)
    assert not natsauth.verify(pub, b"other", sig)
    assert not natsauth.verify("Unot-a-key", b"nonce", sig)


def test_device_jwt_carries_no_permission_and_expires() -> None:
    keys = natsjwt.HubKeys.generate()
    seed = natsauth.new_seed("user")
    token = natsjwt.device_jwt(keys, "dev-1", natsauth.public_key(seed), ttl=60, now=5000)
    _, claims = _parts(token)
    assert claims["name"] == "dev-1" and claims["exp"] == 5060
    assert claims["iss"] == keys.device_signer_public
    # nats-server refuses a scoped user with any permission or limit set.
    assert claims["nats"] == {"type": "user", "version": 2, "issuer_account": keys.account_public}
    assert natsauth.expiry(token) == 5060.0


def test_account_jwt_scopes_the_device_key_and_lists_revocations() -> None:
    keys = natsjwt.HubKeys.generate()
    token = natsjwt.account_jwt(keys, {"UKEY": 123}, now=7)
    _, claims = _parts(token)
    (scope,) = claims["nats"]["signing_keys"]
    assert scope["kind"] == "user_scope" and scope["key"] == keys.device_signer_public
    assert "sb.dev.{{name()}}.>" in scope["template"]["pub"]["allow"]
    assert "_INBOX.{{name()}}.>" in scope["template"]["sub"]["allow"]
    assert claims["nats"]["revocations"] == {"UKEY": 123}
    assert claims["iss"] == natsauth.public_key(keys.operator)


def test_shared_logins_are_bearer_jwts_in_the_url_password() -> None:
    keys = natsjwt.HubKeys.generate()
    logins = natsjwt.shared_logins(keys)
    _, enroll = _parts(logins["enroll_password"])
    assert enroll["nats"]["bearer_token"] is True
    assert enroll["nats"]["pub"]["allow"] == ["sb.hub.enroll", "sb.hub.renew.>"]
    url = f"nats://enroll:{logins['enroll_password']}@127.0.0.1:4222"
    opts = natsauth.auth_options(url)
    assert opts["user_jwt_cb"]() == bytearray(logins["enroll_password"].encode())
    assert opts["signature_cb"]("nonce") == b""
    assert natsauth.auth_options("nats://enroll:plain-password@127.0.0.1:4222") == {}


def test_creds_text_holds_the_jwt_and_the_seed() -> None:
    text = natsauth.creds_text("eyJh.b.c", "SUSEED")
    assert "-----BEGIN NATS USER JWT-----\neyJh.b.c\n------END NATS USER JWT------" in text
    assert "-----BEGIN USER NKEY SEED-----\nSUSEED\n------END USER NKEY SEED------" in text


def test_renewal_nonces_are_single_use_and_a_flood_cannot_push_one_out() -> None:
    auth = DeviceAuth(*(cast(Any, None),) * 5, natsjwt.HubKeys.generate())
    mine = auth._nonce("dev-1")
    for _ in range(1000):
        auth._nonce("dev-1")  # someone else asking for dev-1's challenges
    assert _NONCE_RE.fullmatch(mine)  # the wire's alphabet and length (older agents check)
    until = auth._live_nonce("dev-1", mine)
    assert until is not None
    assert auth._live_nonce("dev-1", mine) == until  # checking uses nothing up
    auth._use_nonce(mine, until)  # a renewal the device's key signed
    assert auth._live_nonce("dev-1", mine) is None  # used up
    assert auth._live_nonce("dev-2", auth._nonce("dev-1")) is None  # another device's
    other = DeviceAuth(*(cast(Any, None),) * 5, natsjwt.HubKeys.generate())
    assert other._live_nonce("dev-1", auth._nonce("dev-1")) is None  # another process's
    forged = auth._nonce("dev-1")
    later = str(int(forged[:-44]) + 10**9)  # a pushed-out expiry breaks the MAC
    assert auth._live_nonce("dev-1", later + forged[-44:]) is None
    assert auth._live_nonce("dev-1", "x" * 60) is None
