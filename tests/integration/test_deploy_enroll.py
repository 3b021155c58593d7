"""The agent deploy's enrollment step run for real: the exact shell command deploy/agent.py
plans, with the real `signalbeam-agent enroll` reading the agent.toml the deploy renders,
against a real nats-server whose bootstrap user may only request ``sb.hub.enroll``; the test
answers as the hub's enrollment handler. The token arrives, the password travels in the
environment, the credentials file appears (0600), and the second run asks nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import stat
import sys
from pathlib import Path

import nats
from nats.aio.msg import Msg

from deploy.commands import enroll_command
from deploy.render import agent_context, render
from deploy.validate import validate_agent
from protocol.enroll import EnrollReply, decode_enroll_request
from protocol.rpc import rpc_error
from protocol.subjects import ENROLL
from tests.harness.nats import NatsHub

VENV = str(Path(sys.executable).parent.parent)
TOKEN = "sbt_deploy1_s3cret"
# Shaped like the hub's generated passwords (secrets.token_urlsafe). Passwords with URL-special
# characters fail in `enroll` itself today: it percent-quotes them into the URL and nats-py
# sends them still quoted. The deploy's own quoting of odd characters is covered by
# tests/unit/test_deploy_commands.py.
BOOT_PW = "bO0t-pw_x9"

ACCOUNTS = """
accounts {
  SB {
    users: [
      { user: hub, password: "hub-pw" }
      { user: enroll, password: BOOT_PW, permissions: {
          publish: { allow: ["sb.hub.enroll"] }, subscribe: { allow: ["_INBOX.>"] } } }
    ]
  }
}
""".replace("BOOT_PW", json.dumps(BOOT_PW))


def _read(path: Path) -> tuple[int, str]:
    return stat.S_IMODE(path.stat().st_mode), path.read_text()


async def _sh(command: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return int(proc.returncode or 0), out.decode()


async def test_enroll_once_with_the_real_cli(tmp_path: Path) -> None:
    hub = NatsHub(tmp_path / "hub", extra_conf=ACCOUNTS)
    nc = await nats.connect(hub.url, user="hub", password="hub-pw")
    requests: list[tuple[str, str, list[str]]] = []

    async def handler(msg: Msg) -> None:
        req = decode_enroll_request(msg.data)
        requests.append((req.token, req.device_id, list(req.tags)))
        if req.token != TOKEN:
            await msg.respond(rpc_error("forbidden", "unknown token", "token"))
            return
        reply = EnrollReply(
            req.device_id, req.device_id, "dev-pw", f"nats-leaf://127.0.0.1:{hub.leaf_port}"
        )
        await msg.respond(reply.to_json())

    try:
        await nc.subscribe(ENROLL, cb=handler)
        await nc.flush()
        agent = validate_agent(
            {
                "signalbeam_venv": VENV,
                "signalbeam_agent_data_dir": str(tmp_path / "agent"),
                "signalbeam_device_id": "pi-01",
                "signalbeam_tags": ["lab", "rpi"],
                "signalbeam_hub": f"127.0.0.1:{hub.port}",
                "signalbeam_enroll_token": TOKEN,
                "signalbeam_enroll_password": BOOT_PW,
            }
        )
        config = tmp_path / "agent.toml"
        config.write_text(render("agent.toml.j2", **agent_context(agent)))
        agent = dataclasses.replace(agent, config_path=str(config))
        command = enroll_command(agent).get_raw_value()

        code, out = await _sh(command)
        assert code == 0, out
        assert requests == [(TOKEN, "pi-01", ["lab", "rpi"])]
        mode, text = _read(Path(agent.credentials_file))
        assert mode == 0o600
        assert json.loads(text)["nats_user"] == "pi-01"
        assert TOKEN not in text  # the token is never written down

        code, out = await _sh(command)
        assert code == 0, out
        assert len(requests) == 1  # guarded by the credentials file
    finally:
        await nc.close()
        hub.stop()
