"""Issue 16 item 1 on real processes: a real `signalbeam-hub run` whose nats-server runs in
operator mode (`init --nats-auth jwt`, the default), devices enrolled with a key made on the
device, raw nats-py logins with a device's JWT + nkey doing what an attacker with that
device's credentials would try, renewal, and revocation at decommission.
"""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nats
import pytest
from nats.aio.client import Client as NATS

from agent.store import Store as AgentStore
from agent.sync.enroll import enroll
from agent.sync.jwtauth import expired, renew_over, renew_via_bootstrap
from protocol import natsauth
from protocol.deviceauth import AuthChallenge, RenewRequest, decode_auth_challenge
from protocol.enroll import EnrollReply
from protocol.errors import RemoteError
from protocol.rpc import rpc_ok
from protocol.subjects import (
    API_PREFIX,
    RENEW_CHALLENGE,
    RENEW_JWT,
    desired_direct_get,
    desired_prompt,
    device_auth,
    heartbeat,
    report,
    rpc,
)
from tests.harness.proxy import TcpProxy
from tests.harness.sync_e2e import lone_agent
from tests.harness.sync_hub import (
    FACTS,
    SyncHub,
    admin_of_hub,
    device_nc,
    enroll_device,
    module_hub,
    new_token,
)
from tests.harness.wait import eventually
from tui.client import HubClient

# How a refused login or renewal surfaces: nats-py's error, or the hub's error reply.
REFUSED = (nats.errors.Error, RemoteError)


hub = module_hub("jwt", init_flags=["--nats-auth", "jwt"])
admin = admin_of_hub()


class Errors:
    def __init__(self) -> None:
        self.seen: list[Exception] = []

    def cb(self) -> Any:
        async def on_error(exc: Exception) -> None:
            self.seen.append(exc)

        return on_error

    def refused(self, what: str, subject: str) -> bool:
        return any(
            "permissions violation" in str(e).lower()
            and what in str(e).lower()
            and subject.lower() in str(e).lower()
            for e in self.seen
        )


async def once(hub: SyncHub, creds: EnrollReply) -> None:
    """One login attempt with no retries (nats-py takes 0 attempts for "no limit"). A JWT
    from an unknown signer is refused only after nats-server's account lookup times out, by
    when nats-py's connect has returned unconnected: the flush raises then."""
    nc = await device_nc(
        hub, creds, allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=5
    )
    try:
        await nc.flush(timeout=20)
    finally:
        await nc.close()


def test_hub_runs_in_operator_mode_with_private_keys(hub: SyncHub) -> None:
    conf = json.loads((hub.data / "nats" / "nats-server.conf").read_text())
    assert conf["operator"] and conf["system_account"] and conf["resolver"]["type"] == "full"
    assert "accounts" not in conf  # no user, no password in the config
    keys = hub.data / "nats" / "keys.json"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert stat.S_IMODE((hub.data / "secrets.json").stat().st_mode) == 0o600


async def test_enrolled_device_key_and_isolation(hub: SyncHub, admin: HubClient) -> None:
    conf = hub.data / "nats" / "nats-server.conf"
    before = conf.read_bytes(), conf.stat().st_mtime_ns
    a = await enroll_device(hub, await new_token(admin), "jwt-a")
    b = await enroll_device(hub, await new_token(admin), "jwt-b")
    # Enrolled with a key made here: the reply's JWT names it, no password anywhere.
    assert a.nats_jwt and a.nats_seed and not a.nats_password
    claims = natsauth.claims(a.nats_jwt)
    assert claims["sub"] == natsauth.public_key(a.nats_seed) and claims["name"] == "jwt-a"
    assert claims["exp"] > claims["iat"]
    # No config rewrite, no reload.
    assert (conf.read_bytes(), conf.stat().st_mtime_ns) == before
    assert hub.metric("signalbeam_enroll_reloads_total") == 0

    errors = Errors()
    nc = await device_nc(hub, a, error_cb=errors.cb())
    b_rpc: list[str] = []
    b_nc = await device_nc(hub, b)

    async def on_b_rpc(msg: Any) -> None:
        b_rpc.append(msg.subject)
        await msg.respond(rpc_ok({"ok": True}))

    await b_nc.subscribe(rpc("jwt-b", "*"), cb=on_b_rpc)
    await b_nc.flush()
    try:
        # Its own subjects: allowed.
        await nc.publish(heartbeat("jwt-a"), b"{}")
        # As B: refused, subscribe to B's: refused, B's desired key: refused, answer B's RPC
        # (subscribe its RPC subjects): refused, the API and JetStream management: refused.
        await nc.publish(report("jwt-b"), b"{}")
        await nc.subscribe(desired_prompt("jwt-b"))
        await nc.subscribe(rpc("jwt-b", ">"))
        await nc.publish(desired_direct_get("jwt-b", domain=None), b"")
        await nc.publish(f"{API_PREFIX}.devices.list", b"{}")
        await nc.publish("$JS.API.STREAM.LIST", b"{}")
        await nc.publish("$JS.API.STREAM.DELETE.SB_REPORTS", b"")
        await nc.flush()
        await eventually(lambda: len(errors.seen) >= 7, "seven refusals", timeout=30)
        assert errors.refused("publish", report("jwt-b"))
        assert errors.refused("subscription", desired_prompt("jwt-b"))
        assert errors.refused("subscription", rpc("jwt-b", ">"))
        assert errors.refused("publish", desired_direct_get("jwt-b", domain=None))
        assert errors.refused("publish", f"{API_PREFIX}.devices.list")
        assert errors.refused("publish", "$JS.API.STREAM.LIST")
        assert errors.refused("publish", "$JS.API.STREAM.DELETE.SB_REPORTS")
        assert not b_rpc
        # A forged device id inside A's own subject: the renewal names B in its body.
        reply = await nc.request(
            device_auth("jwt-a", "challenge"), AuthChallenge("jwt-a").to_json(), 10
        )
        nonce = decode_auth_challenge(reply.data).nonce
        sig = base64.urlsafe_b64encode(natsauth.sign(a.nats_seed, nonce.encode()))
        forged = RenewRequest("jwt-b", nonce, sig.rstrip(b"=").decode()).to_json()
        reply = await nc.request(device_auth("jwt-a", "renew"), forged, 10)
        assert json.loads(reply.data)["error"]["code"] == "unauthorized"
    finally:
        await nc.close()
        await b_nc.close()


async def test_a_jwt_from_another_key_or_signer_is_refused(hub: SyncHub, admin: HubClient) -> None:
    a = await enroll_device(hub, await new_token(admin), "jwt-forge")
    # B's JWT with A's seed (the nonce signature does not match): refused.
    stranger = natsauth.new_seed("user")
    with pytest.raises(REFUSED):
        await once(hub, replace(a, nats_seed=stranger))
    # A JWT for A's own key signed by a key the account does not know: refused.
    rogue = natsauth.new_seed("account")
    token = natsauth.encode(
        {
            "sub": natsauth.public_key(a.nats_seed),
            "name": "jwt-forge",
            "nats": {"type": "user", "version": 2},
        },
        rogue,
    )
    with pytest.raises(REFUSED):
        await once(hub, replace(a, nats_jwt=token))


async def test_renewal_needs_the_device_key_not_the_token(hub: SyncHub, admin: HubClient) -> None:
    a = await enroll_device(hub, await new_token(admin), "jwt-renew")
    nc = await device_nc(hub, a)
    try:
        fresh = await renew_over(nc, a, own_link=True)
        assert natsauth.claims(fresh.nats_jwt)["sub"] == natsauth.public_key(a.nats_seed)
        assert fresh.bootstrap_url == hub.enroll_url  # the hub's current bootstrap login
        # A nonce signed by another key: refused.
        reply = await nc.request(
            device_auth("jwt-renew", "challenge"), AuthChallenge("jwt-renew").to_json(), 10
        )
        nonce = decode_auth_challenge(reply.data).nonce
        bad = base64.urlsafe_b64encode(natsauth.sign(natsauth.new_seed(), nonce.encode()))
        reply = await nc.request(
            device_auth("jwt-renew", "renew"),
            RenewRequest("jwt-renew", nonce, bad.rstrip(b"=").decode()).to_json(),
            10,
        )
        assert json.loads(reply.data)["error"]["code"] == "unauthorized"
    finally:
        await nc.close()
    # Through the bootstrap login (what a device whose JWT expired offline does).
    via_boot = await renew_via_bootstrap(replace(a, bootstrap_url=hub.enroll_url))
    assert natsauth.claims(via_boot.nats_jwt)["name"] == "jwt-renew"
    # A replayed nonce is refused there too.
    boot = await nats.connect(
        hub.enroll_url, inbox_prefix="_INBOX._enroll", **natsauth.auth_options(hub.enroll_url)
    )
    try:
        reply = await boot.request(RENEW_CHALLENGE, AuthChallenge("jwt-renew").to_json(), 10)
        nonce = decode_auth_challenge(reply.data).nonce
        sig = base64.urlsafe_b64encode(natsauth.sign(a.nats_seed, nonce.encode()))
        body = RenewRequest("jwt-renew", nonce, sig.rstrip(b"=").decode()).to_json()
        assert "nats_jwt" in json.loads((await boot.request(RENEW_JWT, body, 10)).data)
        again = json.loads((await boot.request(RENEW_JWT, body, 10)).data)
        assert again["error"]["code"] == "unauthorized"
    finally:
        await boot.close()


async def test_decommission_revokes_the_key_and_drops_the_connection(
    hub: SyncHub, admin: HubClient
) -> None:
    a = await enroll_device(hub, await new_token(admin), "jwt-gone")
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    nc: NATS = await device_nc(
        hub, a, closed_cb=on_closed, max_reconnect_attempts=3, reconnect_time_wait=0.2
    )
    conf = hub.data / "nats" / "nats-server.conf"
    before = conf.read_bytes()
    try:
        await admin.call("devices.decommission", {"id": "jwt-gone"})
        await asyncio.wait_for(closed.wait(), 60)
        assert conf.read_bytes() == before
        # It cannot come back: neither its JWT nor a renewal.
        with pytest.raises(REFUSED):
            await once(hub, a)
        with pytest.raises(REFUSED):
            await renew_via_bootstrap(replace(a, bootstrap_url=hub.enroll_url))
    finally:
        await nc.close()


@pytest.mark.slow
async def test_a_real_agent_links_renews_and_is_revoked(tmp_path: Path) -> None:
    """A real `signalbeam-agent` with its leaf: enrolled by the CLI with a key made on the
    device, linked with JWT + nkey, renewing its short-lived JWT while online, and cut off
    for good at decommission."""
    hub = SyncHub(tmp_path / "hub", init_flags=["--nats-auth", "jwt", "--device-jwt-ttl", "15"])
    lone = await asyncio.to_thread(lone_agent, hub, tmp_path / "dev", "jwt-real-1")
    data = lone.data
    creds_file = data / "hub-credentials.json"
    creds = json.loads(creds_file.read_text())
    assert creds["nats_jwt"] and creds["nats_seed"] and "nats_password" not in creds
    assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600
    first_jwt = creds["nats_jwt"]
    agent = lone.start()
    try:
        async with hub.client() as admin:

            async def status() -> str:
                items = (await admin.call("devices.list", {}))["items"]
                return next((d["status"] for d in items if d["id"] == "jwt-real-1"), "")

            async def online() -> bool:
                return await status() == "online"

            await eventually(online, "online at the hub, " + agent.log_tail(), timeout=90)
            leaf_creds = data / "leaf" / "device.creds"
            assert stat.S_IMODE(leaf_creds.stat().st_mode) == 0o600
            # Renewed over its own link before the 15 s JWT ran out, and still online
            # after the first JWT's expiry.
            await eventually(
                lambda: json.loads(creds_file.read_text())["nats_jwt"] != first_jwt,
                "JWT renewed, " + agent.log_tail(),
                timeout=90,
            )
            expiry = natsauth.expiry(first_jwt)
            assert expiry is not None
            await eventually(lambda: time.time() > expiry + 3, "first JWT expired", timeout=60)
            await eventually(online, "online past the first JWT's expiry", timeout=90)
            assert "JWT renewed" in agent.log_tail(400)
            # Decommission: the key is revoked and the link drops for good.
            await admin.call("devices.decommission", {"id": "jwt-real-1"})
            await eventually(
                lambda: (
                    "Revoked" in (data / "leaf" / "leaf.log").read_text(errors="replace")
                    or "Authorization Violation"
                    in (data / "leaf" / "leaf.log").read_text(errors="replace")
                ),
                "the leaf cut off",
                timeout=90,
            )
        assert agent.alive()
    finally:
        agent.stop(timeout=30)
        assert hub.stop() == 0, hub.proc.log_tail() if hub.proc else ""


async def test_a_thousand_enrollments_at_once_none_refused_config_untouched(
    hub: SyncHub, admin: HubClient
) -> None:
    """1,000 enrollments in parallel (at most 128 in flight, loopback): none refused, every
    JWT for its own device's key, and the nats-server config never written."""
    conf = hub.data / "nats" / "nats-server.conf"
    before = conf.read_bytes(), conf.stat().st_mtime_ns
    token = await new_token(admin, uses=1000)
    gate = asyncio.Semaphore(128)

    async def one(i: int) -> EnrollReply:
        async with gate:
            # A generous reply wait: 1,000 at once on a loaded 2-core box queue at the hub.
            return await enroll(hub.enroll_url, token, f"k-{i:04d}", FACTS, timeout=120)

    replies = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(1000))), 900)
    assert len(replies) == 1000
    for i, r in enumerate(replies):
        doc = natsauth.claims(r.nats_jwt)
        assert doc["name"] == f"k-{i:04d}" and doc["sub"] == natsauth.public_key(r.nats_seed)
    assert (conf.read_bytes(), conf.stat().st_mtime_ns) == before
    assert hub.metric("signalbeam_enroll_reloads_total") == 0
    rows = hub.query("SELECT count(*) FROM device_credentials WHERE device_id LIKE 'k-%'")
    assert rows[0][0] == 1000
    # And they log in: a sample of them, each with its own key.
    for r in replies[::200]:
        await once(hub, r)


@pytest.mark.slow
async def test_a_password_enrolled_device_migrates_on_its_next_connection(tmp_path: Path) -> None:
    """A real agent enrolled with a password on a password-mode hub moves to its own nkey on
    its link (its password login proves it), and stays linked when the hub is switched to
    JWT mode (nats-server in operator mode takes no password any more). Then it is a JWT
    device like any other: offline past its JWT's expiry it renews on reconnect through the
    bootstrap login the hub handed it (a password enrollment never kept one)."""
    hub = SyncHub(
        tmp_path / "hub", init_flags=["--nats-auth", "password", "--device-jwt-ttl", "20"]
    )
    lone = await asyncio.to_thread(lone_agent, hub, tmp_path / "dev", "mig-1")
    data = lone.data
    creds_file = data / "hub-credentials.json"
    assert "nats_jwt" not in json.loads(creds_file.read_text())  # a password device
    agent = lone.start()

    async def online() -> bool:
        async with hub.client() as admin:
            items = (await admin.call("devices.list", {}))["items"]
            return any(d["id"] == "mig-1" and d["status"] == "online" for d in items)

    try:
        await eventually(online, "online with its password, " + agent.log_tail(), timeout=90)
        await eventually(
            lambda: "nats_jwt" in json.loads(creds_file.read_text()),
            "moved to its own key, " + agent.log_tail(),
            timeout=90,
        )
        creds = json.loads(creds_file.read_text())
        assert natsauth.claims(creds["nats_jwt"])["sub"] == natsauth.public_key(creds["nats_seed"])
        assert creds.get("bootstrap_url") == hub.enroll_url  # handed at migration
        assert hub.query("SELECT nats_public_key FROM device_credentials")[0][0] == (
            natsauth.public_key(creds["nats_seed"])
        )
        # The hub moves to JWT mode: a restart with nats_auth = "jwt".
        assert hub.stop() == 0
        toml = hub.data / "hub.toml"
        toml.write_text(toml.read_text().replace('nats_auth = "password"', 'nats_auth = "jwt"'))
        hub.start()
        operator = hub.secret("operator_password")
        assert natsauth.is_jwt(operator)  # the shared logins are JWTs now
        hub.url = f"nats://operator:{operator}@127.0.0.1:{hub.port}"
        restarted = hub.query("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')")[0][0]

        def heard_since_restart() -> bool:
            rows = hub.query("SELECT received_at FROM device_heartbeats WHERE device_id = 'mig-1'")
            return bool(rows) and rows[0][0] > restarted

        # A heartbeat the restarted hub received: the leaf linked again, with the JWT.
        await eventually(heard_since_restart, "heard again, " + agent.log_tail(400), timeout=120)
        assert "linking with the JWT" in agent.log_tail(400)
        await eventually(online, "online again with its JWT", timeout=120)
        # Its next renewal hands it the JWT-mode bootstrap login (the password one is gone).
        enroll_secret = quote(hub.secret("enroll_password"), safe="")
        await eventually(
            lambda: enroll_secret in json.loads(creds_file.read_text()).get("bootstrap_url", ""),
            "the new bootstrap URL kept, " + agent.log_tail(400),
            timeout=90,
        )
        # Offline (the hub down) past the expiry of the JWT in force, then back.
        in_force = json.loads(creds_file.read_text())["nats_jwt"]
        expiry = natsauth.expiry(in_force)
        assert expiry is not None
        assert hub.stop() == 0
        # Recorded on the device while offline (another process writing its store, as the
        # agent's CLI or HTTP API would): delivered once the renewed JWT links it again.
        store = AgentStore.open(data / "agent.db", device_id="mig-1")
        try:
            offline_seqs = [store.event("test.offline", f"offline {i}") for i in range(20)]
        finally:
            store.close()
        await eventually(lambda: time.time() > expiry + 2, "expired offline", timeout=60)
        assert agent.alive()
        hub.start()
        back = hub.query("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')")[0][0]
        await eventually(
            lambda: json.loads(creds_file.read_text())["nats_jwt"] != in_force,
            "renewed on reconnect, " + agent.log_tail(400),
            timeout=90,
        )
        assert not expired(json.loads(creds_file.read_text())["nats_jwt"])
        hub_log = hub.data.parent / f"{hub.data.name}-hub.log"
        assert "device JWT renewed (bootstrap login)" in hub_log.read_text(errors="replace")

        def heard_since_back() -> bool:
            rows = hub.query("SELECT received_at FROM device_heartbeats WHERE device_id = 'mig-1'")
            return bool(rows) and rows[0][0] > back

        await eventually(
            heard_since_back, "linked after renewal, " + agent.log_tail(400), timeout=120
        )

        def offline_rows() -> list[int]:
            rows = hub.query(
                "SELECT seq FROM events WHERE device_id = 'mig-1' AND kind = 'test.offline'"
                " ORDER BY seq"
            )
            return [r[0] for r in rows]

        await eventually(
            lambda: max(offline_seqs) in offline_rows(), "offline rows delivered", timeout=120
        )
        assert offline_rows() == offline_seqs  # each once, none missing
        assert agent.alive()
    finally:
        agent.stop(timeout=30)
        hub.stop()


@pytest.mark.slow
async def test_a_jwt_that_expires_offline_is_renewed_on_reconnect(tmp_path: Path) -> None:
    """A real agent whose hub is out of reach past its JWT's expiry keeps running; when the
    hub is back its leaf is refused (expired JWT), the agent renews through the bootstrap
    login with its key, and the leaf links with the new JWT."""
    hub = SyncHub(tmp_path / "hub", init_flags=["--nats-auth", "jwt", "--device-jwt-ttl", "20"])
    leaf_path = TcpProxy(int(hub.ports["leafnode"]))
    client_path = TcpProxy(hub.port)
    lone = await asyncio.to_thread(
        lambda: lone_agent(
            hub, tmp_path / "dev", "off-1", hub_port=client_path.port,
            leaf_url=f"nats-leaf://127.0.0.1:{leaf_path.port}",
        )
    )  # fmt: skip
    creds_file = lone.data / "hub-credentials.json"
    agent = lone.start()

    def heard_after(stamp: str) -> bool:
        rows = hub.query("SELECT received_at FROM device_heartbeats WHERE device_id = 'off-1'")
        return bool(rows) and rows[0][0] > stamp

    def now_at_hub() -> str:
        return str(hub.query("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')")[0][0])

    try:
        await eventually(lambda: heard_after(""), "linked, " + agent.log_tail(), timeout=90)
        # Offline: both ways to the hub cut, past the expiry of the JWT in force.
        leaf_path.cut()
        client_path.cut()
        in_force = json.loads(creds_file.read_text())["nats_jwt"]
        expiry = natsauth.expiry(in_force)
        assert expiry is not None
        await eventually(lambda: time.time() > expiry + 2, "expired offline", timeout=60)
        assert json.loads(creds_file.read_text())["nats_jwt"] == in_force  # no renewal
        assert agent.alive()
        back = now_at_hub()
        leaf_path.restore()
        client_path.restore()
        await eventually(
            lambda: json.loads(creds_file.read_text())["nats_jwt"] != in_force,
            "renewed on reconnect, " + agent.log_tail(400),
            timeout=90,
        )
        fresh = json.loads(creds_file.read_text())["nats_jwt"]
        assert not expired(fresh)
        # Through the bootstrap login: its own link refuses an expired JWT.
        hub_log = hub.data.parent / f"{hub.data.name}-hub.log"
        assert "device JWT renewed (bootstrap login)" in hub_log.read_text(errors="replace")
        await eventually(
            lambda: heard_after(back), "linked again, " + agent.log_tail(400), timeout=120
        )
        assert agent.alive()
    finally:
        agent.stop(timeout=30)
        leaf_path.close()
        client_path.close()
        assert hub.stop() == 0, hub.proc.log_tail() if hub.proc else ""
