"""Issue 19 attacks on real processes: a real `signalbeam-hub run` (nats-server with the
config the hub generates, the hub, litestream) and raw nats-py clients logged in with the
bootstrap, operator and device credentials, doing what the security review did.

- item 2: the bootstrap (enroll) login sniffs inboxes while keys, tokens and a device's
  password are made;
- item 3: the shared operator login sniffs an admin creating an admin key, and calls device
  RPC past the API;
- item 4: an id with a trailing newline is enrolled, and a hub whose DB already holds one
  starts;
- item 8: file modes of a hand-made data dir, the DB's WAL/SHM and the replica; no device
  password in a copy of the DB or the nats config; already-enrolled devices keep logging in
  with their plain password (migration).

The tests on the shared hub run twice: on a password-mode hub and on a JWT-mode one
(nats-server in operator mode, issue 16), where the device's secret is its nkey seed.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from agent.http.tokens import TokenStore
from hub.store import Store
from protocol import natsauth
from protocol.enroll import EnrollReply, EnrollRequest, decode_enroll_reply
from protocol.rpc import rpc_ok
from protocol.subjects import ENROLL, INBOX_ENROLL, INBOX_OPERATOR, heartbeat, rpc
from tests.harness.sync_hub import (
    FACTS,
    SyncHub,
    device_nc,
    enroll_device,
    new_token,
)
from tests.harness.wait import eventually
from tui.client import HubClient

LEGACY_PASSWORD = "legacy-plain-password-from-before-issue-19"
BAD_ID = "cr-b\n"


@pytest.fixture(scope="module", params=["password", "jwt"])
def hub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SyncHub]:
    """Every attack on both login modes: password (one bcrypt user per device) and JWT
    (nats-server in operator mode, each device its own nkey; issue 16)."""
    proc = SyncHub(
        tmp_path_factory.mktemp("trust") / "data",
        litestream=True,
        init_flags=["--nats-auth", request.param],
    )
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


@pytest.fixture
async def admin(hub: SyncHub) -> AsyncIterator[HubClient]:
    async with hub.client() as c:
        yield c


class Raw:
    """A raw nats-py login that records what it receives and the server's errors."""

    def __init__(self, nc: NATS, errors: list[Exception]) -> None:
        self.nc = nc
        self.errors = errors
        self.seen: list[Msg] = []

    async def capture(self, msg: Msg) -> None:
        self.seen.append(msg)

    def blob(self) -> bytes:
        return b"\n".join(m.data + repr(m.headers).encode() for m in self.seen)

    def refused(self, what: str, subject: str) -> bool:
        """The server answered with a permissions violation for this subject (nats-py
        lower-cases the server's message)."""
        return any(
            "permissions violation" in str(e).lower()
            and what in str(e).lower()
            and subject.lower() in str(e).lower()
            for e in self.errors
        )


async def raw_login(hub: SyncHub, user: str, password: str, **kw: Any) -> Raw:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(
        f"nats://127.0.0.1:{hub.port}",
        user=user,
        password=password,
        error_cb=on_error,
        **natsauth.auth_options("", password),  # JWT mode: the secret is a bearer JWT
        **kw,
    )
    return Raw(nc, errors)


def jwt_mode(hub: SyncHub) -> bool:
    return hub.init.get("nats_auth") == "jwt"


def device_secret(creds: EnrollReply) -> str:
    """What logs the device in besides its id: its password, or its nkey seed."""
    return creds.nats_password or creds.nats_seed


async def serve_rpc(nc: NATS, device_id: str, seen: list[str]) -> None:
    async def on_rpc(msg: Msg) -> None:
        seen.append(msg.subject)
        await msg.respond(rpc_ok({"ok": True}))

    await nc.subscribe(rpc(device_id, "*"), cb=on_rpc)
    await nc.flush()


# ------------------------------------------------------------------ item 2: bootstrap login


async def test_bootstrap_login_cannot_read_secrets(hub: SyncHub, admin: HubClient) -> None:
    boot = await raw_login(hub, "enroll", hub.secret("enroll_password"))
    try:
        # What the review did: every inbox. Refused now.
        await boot.nc.subscribe("_INBOX.>", cb=boot.capture)
        # Its own prefix, which every enrolling device shares: allowed, and so it must carry
        # no secret.
        await boot.nc.subscribe(f"{INBOX_ENROLL}.>", cb=boot.capture)
        await boot.nc.flush()
        await eventually(lambda: boot.refused("subscription", "_INBOX.>"), what="_INBOX.> refused")

        token = await new_token(admin)
        key = (await admin.call("keys.create", {"name": "sniffed", "role": "admin"}))["key"]
        creds = await enroll_device(hub, token, "tb-boot-1")
        dev = await device_nc(hub, creds)
        try:
            await serve_rpc(dev, "tb-boot-1", [])
            await admin.call("devices.status", {"id": "tb-boot-1"})
        finally:
            await dev.close()
        # The enrollment reply did reach the shared prefix (the sniffer is live)...
        await eventually(
            lambda: any(b"tb-boot-1" in m.data for m in boot.seen), what="reply sniffed"
        )
        # ...and held nothing secret: no password, no token, no key.
        blob = boot.blob()
        assert device_secret(creds) and device_secret(creds).encode() not in blob
        assert token.encode() not in blob and key.encode() not in blob
        assert b"nats_password" not in blob and b"nats_seed" not in blob
        for m in boot.seen:
            assert m.subject.startswith(f"{INBOX_ENROLL}."), m.subject
    finally:
        await boot.nc.close()


async def test_enrollment_reply_never_carries_a_password(hub: SyncHub, admin: HubClient) -> None:
    """The wire reply itself (an agent from before issue 19 sends no password: refused)."""
    token = await new_token(admin, uses=2)
    boot = await raw_login(hub, "enroll", hub.secret("enroll_password"), inbox_prefix=INBOX_ENROLL)
    seed = natsauth.new_seed("user")
    try:
        old = EnrollRequest(token, "tb-old-agent", FACTS).to_json()
        msg = await boot.nc.request(ENROLL, old, timeout=10)
        err = json.loads(msg.data)["error"]
        # JWT mode: an agent that sends no key of its own is refused the same way.
        wanted = "nats_public_key" if jwt_mode(hub) else "nats_password"
        assert err["code"] == "invalid" and err["field"] == wanted
        new = EnrollRequest(
            token,
            "tb-new-agent",
            FACTS,
            nats_password="p" * 43,
            nats_public_key=natsauth.public_key(seed),
        ).to_json()
        msg = await boot.nc.request(ENROLL, new, timeout=10)
        assert "nats_password" not in json.loads(msg.data)
        assert "nats_seed" not in json.loads(msg.data)
        reply = decode_enroll_reply(msg.data)
        assert reply.nats_password == ""
    finally:
        await boot.nc.close()
    # The device logs in with the password it made, or its own key and the JWT.
    made = replace(reply, nats_password="p" * 43, nats_seed=seed)
    if jwt_mode(hub):
        made = replace(made, nats_password="")
    dev = await nats.connect(f"nats://127.0.0.1:{hub.port}", **natsauth.enrolled_login(made))
    await dev.close()


# ------------------------------------------------------------------ item 3: operator login


async def test_operator_login_cannot_become_admin_or_bypass_the_api(
    hub: SyncHub, admin: HubClient
) -> None:
    readonly_key = (await admin.call("keys.create", {"name": "viewer", "role": "readonly"}))["key"]
    op = await raw_login(hub, "operator", hub.secret("operator_password"))
    creds = await enroll_device(hub, await new_token(admin), "tb-op-1")
    dev_errors: list[Exception] = []

    async def on_dev_error(exc: Exception) -> None:
        dev_errors.append(exc)

    dev = await device_nc(hub, creds, error_cb=on_dev_error)
    rpcs: list[str] = []
    try:
        await op.nc.subscribe("_INBOX.>", cb=op.capture)
        await op.nc.subscribe(f"{INBOX_OPERATOR}.>", cb=op.capture)
        await op.nc.flush()
        await eventually(lambda: op.refused("subscription", "_INBOX.>"), what="_INBOX.> refused")

        new_admin = (await admin.call("keys.create", {"name": "new-admin", "role": "admin"}))["key"]
        await eventually(lambda: any(b"new-admin" in m.data for m in op.seen), what="reply sniffed")
        assert new_admin.encode() not in op.blob() and b"sbk_" not in op.blob()
        # With what a read-only operator can see, it stays read-only.
        async with hub.client(readonly_key) as viewer:
            assert (await viewer.call("session.whoami"))["role"] == "readonly"

        # Device RPC straight from the operator login (no API key, no role check): refused.
        await serve_rpc(dev, "tb-op-1", rpcs)
        await op.nc.publish(rpc("tb-op-1", "restart"), b'{"v":1,"args":{"container":"web"}}')
        await op.nc.flush()
        await eventually(lambda: op.refused("publish", "sb.dev.tb-op-1.rpc"), what="rpc refused")
        await dev.flush()
        assert rpcs == []
        # Through the API (the hub's own login) it works.
        await admin.call("devices.status", {"id": "tb-op-1"})
        assert rpcs == ["sb.dev.tb-op-1.rpc.status"]

        # A device cannot forge a reply into an operator's (or an enrolling device's) inbox.
        await dev.publish(f"{INBOX_OPERATOR}.forged.1", b'{"v":1,"result":{}}')
        await dev.flush()
        await eventually(
            lambda: any(f"{INBOX_OPERATOR}.forged".lower() in str(e).lower() for e in dev_errors),
            what="forged reply refused",
        )
    finally:
        await dev.close()
        await op.nc.close()


# ------------------------------------------------------------------ item 11: token in ps


def _enroll_cli(hub: SyncHub, data: Path, device_id: str, args: list[str], stdin: str) -> str:
    """`signalbeam-agent enroll` as a process; fails if the token shows in its argv."""
    argv = [sys.executable, "-m", "agent", "enroll", "--data-dir", str(data)]
    argv += ["--hub", f"127.0.0.1:{hub.port}", "--device-id", device_id, "--json", *args]
    env = {**os.environ, "SB_ENROLL_PASSWORD": hub.secret("enroll_password")}
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # What `ps` shows every local user, read while it runs.
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    out, err = proc.communicate(stdin, timeout=120)
    assert proc.returncode == 0, err
    return cmdline.decode(errors="replace") + out


async def test_enroll_token_from_a_file_or_stdin(
    hub: SyncHub, admin: HubClient, tmp_path: Path
) -> None:
    token = await new_token(admin, uses=2)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    shown = await asyncio.to_thread(
        _enroll_cli, hub, tmp_path / "a", "tb-tokfile-1", ["--token-file", str(token_file)], ""
    )
    shown += await asyncio.to_thread(
        _enroll_cli, hub, tmp_path / "b", "tb-tokfile-2", ["--token-file", "-"], token + "\n"
    )
    assert token not in shown
    for data in (tmp_path / "a", tmp_path / "b"):
        creds = decode_enroll_reply((data / "hub-credentials.json").read_bytes())
        assert creds.jwt_auth == jwt_mode(hub)
        nc = await nats.connect(f"nats://127.0.0.1:{hub.port}", **natsauth.enrolled_login(creds))
        await nc.close()


# ------------------------------------------------------------------ item 4: ids


async def test_id_with_a_trailing_newline_is_refused_and_the_hub_stays_up(
    hub: SyncHub, admin: HubClient
) -> None:
    token = await new_token(admin, uses=2)
    boot = await raw_login(hub, "enroll", hub.secret("enroll_password"), inbox_prefix=INBOX_ENROLL)
    try:
        body = json.loads(
            EnrollRequest(token, "placeholder", FACTS, nats_password="q" * 43).to_json()
        )
        body["device_id"] = BAD_ID
        msg = await boot.nc.request(ENROLL, json.dumps(body).encode(), timeout=10)
        err = json.loads(msg.data)["error"]
        assert err["code"] == "invalid" and err["field"] == "device_id"
    finally:
        await boot.nc.close()
    assert hub.query("SELECT count(*) FROM devices WHERE id = ?", (BAD_ID,))[0][0] == 0
    # Reloads still work: the next device enrolls (the token was not used up) and logs in.
    creds = await enroll_device(hub, token, "tb-after-bad")
    nc = await device_nc(hub, creds)
    await nc.close()
    assert hub.http("/health/ready")[0] == 200


# ------------------------------------------------------------------ item 8: file modes


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _private_tree(root: Path) -> list[str]:
    """Paths under ``root`` readable by group or others."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            if p.is_symlink():
                continue
            if _mode(p) & 0o077:
                bad.append(f"{p} {oct(_mode(p))}")
    return bad


async def test_hub_data_dir_is_private_and_holds_no_device_password(
    hub: SyncHub, admin: HubClient
) -> None:
    # `signalbeam-hub init` ran by hand (HubProcess, under this test's umask): the hub sets
    # its own.
    creds = await enroll_device(hub, await new_token(admin), "tb-files-1")
    data = hub.data
    assert _mode(data) == 0o700
    for name in ("hub.db", "hub.db-wal", "hub.db-shm", "secrets.json", "hub.toml"):
        assert _mode(data / name) == 0o600, name
    # litestream's replica (a child of the hub) and the JetStream store (nats-server's).
    await eventually(lambda: any((data / "replica").rglob("*")), timeout=60, what="replica written")
    assert _private_tree(data) == []
    # A copy of the DB or the nats config hands out no device password.
    for path in (data / "hub.db", data / "hub.db-wal", data / "nats" / "nats-server.conf"):
        assert device_secret(creds).encode() not in path.read_bytes(), path
    if jwt_mode(hub):
        assert _mode(data / "nats" / "keys.json") == 0o600


def test_agent_token_db_and_its_wal_are_private(tmp_path: Path) -> None:
    data = tmp_path / "agent"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "token",
            "create",
            "--name",
            "alice",
            "--role",
            "admin",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        preexec_fn=lambda: os.umask(0o022),  # a login shell's usual umask
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert _mode(data) == 0o700
    assert _private_tree(data) == []
    # While the DB is open (as in the running agent) its WAL and SHM exist: 0600 too, under
    # this process's umask, whatever it is (they take the main file's mode).
    old = os.umask(0o022)
    try:
        tokens = TokenStore(tmp_path / "other" / "http-tokens.db")
    finally:
        os.umask(old)
    try:
        tokens.create("bob", "viewer", created_by="test")
        for suffix in ("", "-wal", "-shm"):
            assert _mode(tmp_path / "other" / f"http-tokens.db{suffix}") == 0o600, suffix
    finally:
        tokens.close()


# ------------------------------------------------------------------ migration and item 4


def _legacy_db(store: Store) -> None:
    """Bring a new DB back to what a hub before issue 19 left: plain device passwords, and a
    device whose id ends in a newline (enrolled when ids were checked with ``match``)."""
    c = store.conn
    c.execute("DELETE FROM schema_migrations WHERE name LIKE 'security: device NATS passwords%'")
    c.execute("DROP TABLE quarantined_devices")
    c.execute("ALTER TABLE device_credentials RENAME COLUMN nats_password_hash TO nats_password")
    for device_id in ("tb-legacy-1", BAD_ID):
        store.upsert_device(device_id, "acme", hostname="old")
        c.execute(
            "INSERT INTO device_credentials (device_id, nats_user, nats_password, created_at)"
            " VALUES (?, ?, ?, '2026-01-01T00:00:00Z')",
            (device_id, device_id, LEGACY_PASSWORD),
        )


class LateHub(SyncHub):
    """`init` only; ``start()`` once ``armed`` (the DB is prepared in between)."""

    armed = False

    def start(self) -> None:
        if self.armed:
            super().start()


async def test_legacy_hub_starts_quarantines_and_keeps_enrolled_devices(tmp_path: Path) -> None:
    data = tmp_path / "data"
    legacy = LateHub(data, litestream=False)
    # The DB an older hub left, 0644 in a 0755 dir.
    store = Store.open(data / "hub.db")
    try:
        _legacy_db(store)
    finally:
        store.close()
    os.chmod(data, 0o755)
    os.chmod(data / "hub.db", 0o644)
    legacy.armed = True
    legacy.start()
    try:
        # The hub became ready (the bad row did not break the nats config) and says why.
        assert legacy.query("SELECT id FROM quarantined_devices") == [(BAD_ID,)]
        assert legacy.query("SELECT count(*) FROM devices WHERE id = ?", (BAD_ID,))[0][0] == 0
        events = legacy.query(
            "SELECT data FROM events WHERE kind = 'device.quarantined' AND device_id IS NULL"
        )
        assert [json.loads(e[0])["device_id"] for e in events] == [BAD_ID]
        assert legacy.metric("signalbeam_quarantined_devices") == 1
        # The already-enrolled device logs in with the password it has, and is heard.
        nc = await nats.connect(
            f"nats://127.0.0.1:{legacy.port}",
            user="tb-legacy-1",
            password=LEGACY_PASSWORD,
            inbox_prefix="_INBOX.tb-legacy-1",
        )
        try:
            beat = {"v": 1, "device_id": "tb-legacy-1", "ts": time.time(), "agent_version": "0"}
            await nc.publish(heartbeat("tb-legacy-1"), json.dumps(beat).encode())
            await nc.flush()
            await eventually(
                lambda: bool(
                    legacy.query("SELECT last_seen FROM devices WHERE id = 'tb-legacy-1'")[0][0]
                ),
                what="legacy device heard",
            )
        finally:
            await nc.close()
        # Its password is now only a hash: not in the DB, its WAL or the nats config.
        stored = legacy.query("SELECT nats_password_hash FROM device_credentials")
        assert all(str(r[0]).startswith("$2a$") for r in stored), stored
        for path in (data / "hub.db", data / "hub.db-wal", data / "nats" / "nats-server.conf"):
            if path.exists():
                assert LEGACY_PASSWORD.encode() not in path.read_bytes(), path
        assert _mode(data) == 0o700 and _mode(data / "hub.db") == 0o600
        # And enrollment (a config reload) works.
        async with legacy.client() as admin:
            creds = await enroll_device(legacy, await new_token(admin), "tb-legacy-2")
        nc = await device_nc(legacy, creds)
        await nc.close()
    finally:
        assert legacy.stop() == 0, legacy.proc.log_tail() if legacy.proc else ""
