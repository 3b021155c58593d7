"""An enrollment whose reply is lost (a nats-server config reload or a dropped link closed the
requester's connection while the reply was in flight) is asked again by the agent with the
same body, and the hub answers the repeat as the first time: the same device-made password
or key proves it is the same device, and the token is not used again (issue 16 follow-up:
bench_enroll lost 1-2 replies in 500 under reloads). Real hub, real nats-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from agent.sync.enroll import enroll, new_device_password
from protocol import natsauth
from protocol.enroll import EnrollReply, EnrollRequest, decode_enroll_reply
from protocol.errors import RemoteError
from protocol.subjects import ENROLL, INBOX_ENROLL, JS_DOMAIN
from tests.harness.nats import NatsHub
from tests.harness.sync_hub import FACTS, SyncHub, device_nc, new_token


@pytest.fixture(params=["password", "jwt"])
async def hub(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SyncHub]:
    proc = SyncHub(tmp_path / "hub", init_flags=["--nats-auth", request.param])
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


async def test_a_repeated_enrollment_request_is_answered_as_the_first(hub: SyncHub) -> None:
    async with hub.client() as admin:
        token = await new_token(admin, uses=1)
    seed = natsauth.new_seed("user")
    password = new_device_password()

    def body(pw: str, key_seed: str) -> bytes:
        return EnrollRequest(
            token,
            "rep-1",
            FACTS,
            ("lab",),
            nats_password=pw,
            nats_public_key=natsauth.public_key(key_seed),
        ).to_json()

    boot = await nats.connect(
        hub.enroll_url, inbox_prefix=INBOX_ENROLL, **natsauth.auth_options(hub.enroll_url)
    )
    try:
        first = decode_enroll_reply((await boot.request(ENROLL, body(password, seed), 30)).data)
        # The reply lost: the device asks again with the same body (the token is used up).
        again = decode_enroll_reply((await boot.request(ENROLL, body(password, seed), 30)).data)
        assert again.device_id == first.device_id == "rep-1"
        assert again.leaf_url == first.leaf_url
        assert bool(again.nats_jwt) == bool(first.nats_jwt)
        if again.nats_jwt:
            assert natsauth.claims(again.nats_jwt)["sub"] == natsauth.public_key(seed)
        # Another machine claiming the id (other password and key) is still refused.
        other = body(new_device_password(), natsauth.new_seed("user"))
        with pytest.raises(RemoteError) as err:
            decode_enroll_reply((await boot.request(ENROLL, other, 30)).data)
        assert err.value.code == "conflict"
    finally:
        await boot.close()
    # One enrollment stored, and the device logs in with what it made.
    assert hub.query("SELECT count(*) FROM devices WHERE id = 'rep-1'")[0][0] == 1
    events = hub.query(
        "SELECT count(*) FROM events WHERE device_id = 'rep-1' AND kind = 'enrolled'"
    )
    assert events[0][0] == 1
    creds = (
        replace(first, nats_seed=seed) if first.nats_jwt else replace(first, nats_password=password)
    )
    nc = await device_nc(hub, creds)
    assert nc.is_connected
    await nc.close()


async def test_the_agent_asks_again_when_the_reply_is_lost(tmp_path: Path) -> None:
    """A real nats-server; the hub's side is a responder that lets the first request go
    unanswered (its reply lost) and answers the second: ``enroll`` asks again with the
    same body and returns the answer."""
    server = NatsHub(tmp_path / "nats")
    hub_nc = await nats.connect(server.url)
    seen: list[bytes] = []

    async def respond(msg: Msg) -> None:
        seen.append(msg.data)
        if len(seen) > 1:
            reply = EnrollReply(
                "lost-1", "lost-1", "", "nats-leaf://127.0.0.1:1", "nats://127.0.0.1:1", JS_DOMAIN
            )
            await msg.respond(reply.to_json())

    try:
        await hub_nc.subscribe(ENROLL, cb=respond)
        await hub_nc.flush()
        out = await asyncio.wait_for(
            enroll(server.url, "tok", "lost-1", FACTS, timeout=5, password="pw-lost-1"), 120
        )
        assert out.device_id == "lost-1"
        assert out.nats_password == "pw-lost-1"
        assert len(seen) == 2
        assert json.loads(seen[0]) == json.loads(seen[1])  # same password, key and token
    finally:
        await hub_nc.close()
        server.stop()
