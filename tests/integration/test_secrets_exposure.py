"""Issue 16 item 3: no API key, registration token, nkey seed, JWT or password in logs, in
any process's arguments, in the environment of the processes the hub and the agent start,
or in a file anyone but the owner can read (hub and agent data dirs).

A real JWT-mode hub (nats-server in operator mode, litestream) and a real agent with its
leaf, enrolled with the token on stdin, linked, and asked for its status through the hub;
then every secret either side holds is looked for everywhere it must not be.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import psutil
import pytest

from tests.harness.sync_e2e import lone_agent
from tests.harness.sync_hub import SyncHub
from tests.harness.wait import eventually


def _secrets(hub: SyncHub, agent_data: Path, token: str) -> dict[str, str]:
    out = {"admin API key": hub.admin_key, "registration token": token}
    for name, value in json.loads((hub.data / "secrets.json").read_text()).items():
        out[f"hub secret {name}"] = value
    for name, value in json.loads((hub.data / "nats" / "keys.json").read_text()).items():
        out[f"hub seed {name}"] = value
    creds = json.loads((agent_data / "hub-credentials.json").read_text())
    out["device seed"] = creds["nats_seed"]
    out["device JWT"] = creds["nats_jwt"]
    return out


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def _tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow
async def test_no_secret_in_logs_argv_child_env_or_readable_files(tmp_path: Path) -> None:
    hub = SyncHub(tmp_path / "hub", litestream=True, init_flags=["--nats-auth", "jwt"])
    # As the deploy enrolls: the bootstrap secret in the environment, the token on stdin.
    lone = await asyncio.to_thread(lone_agent, hub, tmp_path / "dev", "sec-1")
    root, data, token, argv, out = lone.root, lone.data, lone.token, lone.argv, lone.enrolled
    agent = lone.start()
    try:
        async with hub.client() as admin:

            async def online() -> bool:
                items = (await admin.call("devices.list", {}))["items"]
                return any(d["id"] == "sec-1" and d["status"] == "online" for d in items)

            await eventually(online, "online, " + agent.log_tail(), timeout=90)
        secrets = _secrets(hub, data, token)
        assert all(len(v) >= 20 for v in secrets.values()), "a secret too short to look for"
        enroll_output = out.stdout + out.stderr
        for what, value in secrets.items():
            assert value not in "\0".join(argv), f"{what} in the enroll command's arguments"

        # Process arguments and the environment of every child (the hub's nats-server and
        # litestream, the agent's leaf nats-server), and the two daemons' arguments.
        assert hub.proc is not None
        procs = _tree(hub.proc.pid) + _tree(agent.pid)
        assert len(procs) >= 4, [p.name() for p in procs]  # hub, nats, litestream, agent, leaf
        for p in procs:
            cmdline = "\0".join(p.cmdline())
            environ = "\0".join(f"{k}={v}" for k, v in p.environ().items())
            for what, value in secrets.items():
                assert value not in cmdline, f"{what} in the arguments of {p.name()} {p.pid}"
                assert value not in environ, f"{what} in the environment of {p.name()} {p.pid}"

        # Logs: the hub's, nats-server's, litestream's, the agent's, its leaf's, the CLI's.
        logs = [hub.data.parent / f"{hub.data.name}-hub.log", root / "agent.log"]
        logs += _files(hub.data / "logs") + list(data.rglob("*.log"))
        assert len(logs) >= 5, logs
        for log in logs:
            text = log.read_text(errors="replace")
            for what, value in secrets.items():
                assert value not in text, f"{what} in {log}"
        for what, value in secrets.items():
            assert value not in enroll_output, f"{what} printed by enroll"

        # Files: nothing under either data dir is readable by group or others; the files
        # that hold a secret are 0600.
        for base in (hub.data, data):
            assert stat.S_IMODE(base.stat().st_mode) & 0o077 == 0, base
            for path in _files(base):
                mode = stat.S_IMODE(path.stat().st_mode)
                assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
        holders = [
            hub.data / "secrets.json",
            hub.data / "nats" / "keys.json",
            data / "hub-credentials.json",
            data / "leaf" / "device.creds",
        ]
        for path in holders:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert os.stat(data / "leaf" / "device.creds").st_uid == os.getuid()
    finally:
        agent.stop(timeout=30)
        assert hub.stop() == 0, hub.proc.log_tail() if hub.proc else ""
