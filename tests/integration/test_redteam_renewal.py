"""Red team: someone holding the bootstrap login (every device's deploy carries it) against
another device's JWT renewal, on a real JWT-mode hub (`signalbeam-hub run`, nats-server in
operator mode, docs/security.md "NATS device identity").

The bootstrap login may ask a challenge for any device id (``sb.hub.renew.challenge``: a
device whose JWT expired offline renews that way) and reads every reply on the shared
``_INBOX._enroll`` prefix. Neither may stop a device from renewing:

- a flood of challenges asked for the device between its own challenge and its answer must
  not push its nonce out;
- a nonce sniffed from the shared inbox and sent back with a wrong signature must not be
  used up: only a renewal the device's key signed takes a nonce (then a replay is refused).
"""

from __future__ import annotations

import base64
import json

import nats
from nats.aio.client import Client as NATS

from protocol import natsauth
from protocol.deviceauth import AuthChallenge, RenewRequest, decode_auth_challenge
from protocol.enroll import EnrollReply
from protocol.subjects import INBOX_ENROLL, RENEW_CHALLENGE, RENEW_JWT, device_auth
from tests.harness.sync_hub import (
    SyncHub,
    admin_of_hub,
    device_nc,
    enroll_device,
    module_hub,
    new_token,
)
from tui.client import HubClient

FLOOD = 200  # challenges the attacker asks for the device (bounded)


hub = module_hub("rt-jwt", init_flags=["--nats-auth", "jwt"])
admin = admin_of_hub()


async def bootstrap(hub: SyncHub) -> NATS:
    return await nats.connect(
        hub.enroll_url, inbox_prefix=INBOX_ENROLL, **natsauth.auth_options(hub.enroll_url)
    )


def signed(creds: EnrollReply, nonce: str) -> str:
    sig = base64.urlsafe_b64encode(natsauth.sign(creds.nats_seed, nonce.encode()))
    return sig.rstrip(b"=").decode()


async def challenge(nc: NATS, subject: str, device: str) -> str:
    reply = await nc.request(subject, AuthChallenge(device).to_json(), 10)
    return decode_auth_challenge(reply.data).nonce


async def test_a_challenge_flood_does_not_push_out_the_devices_nonce(
    hub: SyncHub, admin: HubClient
) -> None:
    creds = await enroll_device(hub, await new_token(admin), "rt-renew-flood")
    dev = await device_nc(hub, creds)
    boot = await bootstrap(hub)
    try:
        # Through its own link, and through the bootstrap login (an expired JWT's way).
        for nc, ask, answer in (
            (dev, device_auth(creds.device_id, "challenge"), device_auth(creds.device_id, "renew")),
            (boot, RENEW_CHALLENGE, RENEW_JWT),
        ):
            nonce = await challenge(nc, ask, creds.device_id)
            for _ in range(FLOOD):
                await challenge(boot, RENEW_CHALLENGE, creds.device_id)
            body = RenewRequest(creds.device_id, nonce, signed(creds, nonce)).to_json()
            reply = json.loads((await nc.request(answer, body, 10)).data)
            assert "nats_jwt" in reply, (answer, reply)
    finally:
        await boot.close()
        await dev.close()


async def test_a_sniffed_nonce_with_a_wrong_signature_is_not_used_up(
    hub: SyncHub, admin: HubClient
) -> None:
    creds = await enroll_device(hub, await new_token(admin), "rt-renew-sniff")
    device_boot = await bootstrap(hub)  # the device, its JWT expired
    attacker = await bootstrap(hub)
    try:
        nonce = await challenge(device_boot, RENEW_CHALLENGE, creds.device_id)
        # The attacker read it on the shared prefix and answers first, with its own key.
        forged = base64.urlsafe_b64encode(natsauth.sign(natsauth.new_seed(), nonce.encode()))
        bad = RenewRequest(creds.device_id, nonce, forged.rstrip(b"=").decode()).to_json()
        refused = json.loads((await attacker.request(RENEW_JWT, bad, 10)).data)
        assert refused["error"]["code"] == "unauthorized", refused
        good = RenewRequest(creds.device_id, nonce, signed(creds, nonce)).to_json()
        reply = json.loads((await device_boot.request(RENEW_JWT, good, 10)).data)
        assert "nats_jwt" in reply, reply
        assert natsauth.claims(reply["nats_jwt"])["sub"] == natsauth.public_key(creds.nats_seed)
        # The device's own renewal took the nonce: a replay of it is refused.
        again = json.loads((await attacker.request(RENEW_JWT, good, 10)).data)
        assert again["error"]["code"] == "unauthorized", again
    finally:
        await attacker.close()
        await device_boot.close()
