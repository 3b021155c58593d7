"""deploy/commands.py: hub init and enrollment commands -- secrets masked in what pyinfra
prints, and the raw commands run by a real shell against stand-in executables: guards hold,
quoting survives, the admin key lands only in the 0600 output file.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from deploy.commands import enroll_command, init_command
from deploy.settings import AgentSettings
from deploy.validate import validate_agent, validate_hub

TOKEN = "sbt_abc123_s3cr'et token"
PASSWORD = "p@ss word'\"$HOME"


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _sh(command: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{tmp_path / 'fakebin'}:{os.environ['PATH']}"}
    return subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, env=env, timeout=30
    )


def _agent(tmp_path: Path, **data: object) -> AgentSettings:
    return validate_agent(
        {
            "signalbeam_venv": str(tmp_path / "venv"),
            "signalbeam_agent_data_dir": str(tmp_path / "data"),
            "signalbeam_hub": "hub.example.com:4222",
            "signalbeam_enroll_token": TOKEN,
            "signalbeam_enroll_password": PASSWORD,
            "signalbeam_tags": ["lab", "rpi"],
            **data,
        }
    )


def test_enroll_command_masks_token_and_password(tmp_path: Path) -> None:
    cmd = enroll_command(_agent(tmp_path))
    shown = str(cmd)  # what pyinfra prints with -vv, and in errors
    assert "s3cr" not in shown and "p@ss" not in shown
    assert "printf '%s\\n' '*MASKED*' |" in shown and "--token-file -" in shown
    raw = cmd.get_raw_value()
    assert "s3cr" in raw and "p@ss" in raw


def test_enroll_url_with_password_is_masked(tmp_path: Path) -> None:
    agent = _agent(
        tmp_path,
        signalbeam_hub="nats://enroll:urlpw@hub.example.com:4222",
        signalbeam_enroll_password=None,
    )
    shown = str(enroll_command(agent))
    assert "urlpw" not in shown and "SB_ENROLL_PASSWORD" not in shown


def test_enroll_runs_once_with_exact_arguments(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    calls = tmp_path / "calls.jsonl"
    # The stand-in records its argv and the password it got from the environment, then
    # writes the credentials file as the real `enroll` does.
    _script(
        bin_dir / "signalbeam-agent",
        f"""exec python3 -c '
import json, os, sys
with open("{calls}", "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "pw": os.environ.get("SB_ENROLL_PASSWORD"), "stdin": sys.stdin.read()}}) + "\\n")
os.makedirs("{tmp_path / "data"}", exist_ok=True)
open("{agent.credentials_file}", "w").write("{{}}")
' "$@"
""",
    )
    raw = enroll_command(agent).get_raw_value()
    for _ in range(2):
        res = _sh(raw, tmp_path)
        assert res.returncode == 0, res.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) == 1  # the second run found the credentials file
    call = json.loads(lines[0])
    assert call["pw"] == PASSWORD
    # The token comes on stdin, never in argv (which `ps` shows every local user).
    assert call["stdin"] == TOKEN + "\n"
    assert call["argv"] == [
        "enroll",
        "--config",
        "/etc/signalbeam/agent.toml",
        "--hub",
        "hub.example.com:4222",
        "--token-file",
        "-",
        "--tags",
        "lab,rpi",
    ]


def test_init_runs_once_and_keeps_the_key_off_stdout(tmp_path: Path) -> None:
    data = tmp_path / "hub-data"
    out = tmp_path / "root" / "init.txt"
    out.parent.mkdir()
    hub = validate_hub(
        {
            "signalbeam_venv": str(tmp_path / "venv"),
            "signalbeam_hub_data_dir": str(data),
            "signalbeam_hub_public_host": "hub.example.com",
            "signalbeam_hub_init_output": str(out),
            "signalbeam_hub_replica_url": "s3://bucket/hub",
        }
    )
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    argv_file = tmp_path / "runuser.argv"
    # runuser -u USER -- CMD...: record, then run CMD (we are not switching users here).
    _script(fakebin / "runuser", f'echo "$@" > {argv_file}\nshift 3\nexec "$@"\n')
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    _script(
        bin_dir / "signalbeam-hub",
        f'mkdir -p {data} && touch {data}/hub.toml\necho "Admin API key: sbk_x_SECRET"\n',
    )
    raw = init_command(hub).get_raw_value()
    first = _sh(raw, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "SECRET" not in first.stdout + first.stderr
    assert "sbk_x_SECRET" in out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    argv = argv_file.read_text().split()
    assert argv[:3] == ["-u", "signalbeam", "--"]
    assert argv[4:] == [
        "init",
        "--data",
        str(data),
        "--client-port",
        "4222",
        "--leafnode-port",
        "7422",
        "--monitor-port",
        "8222",
        "--http-port",
        "8080",
        "--host",
        "0.0.0.0",
        "--http-host",
        "0.0.0.0",
        "--public-host",
        "hub.example.com",
        "--replica-url",
        "s3://bucket/hub",
    ]
    # Initialised: a second run must not call init (which would refuse anyway) nor
    # truncate the output file the operator has not read yet.
    argv_file.unlink()
    second = _sh(raw, tmp_path)
    assert second.returncode == 0, second.stderr
    assert not argv_file.exists()
    assert "sbk_x_SECRET" in out.read_text()


def test_init_without_litestream() -> None:
    hub = validate_hub(
        {"signalbeam_hub_public_host": "h.example.com", "signalbeam_hub_litestream": False}
    )
    raw = init_command(hub).get_raw_value()
    assert "--no-litestream" in raw and "--replica-url" not in raw


def test_init_lays_out_the_cluster_with_this_host_as_node_0() -> None:
    hub = validate_hub(
        {
            "signalbeam_hub_public_host": "h.example.com",
            "signalbeam_hub_cluster_hosts": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
        }
    )
    raw = init_command(hub).get_raw_value()
    assert "--cluster-hosts 10.0.0.1,10.0.0.2,10.0.0.3 --cluster-local 0" in raw
    assert "--cluster-port 6222" in raw
    plain = validate_hub({"signalbeam_hub_public_host": "h.example.com"})
    assert "--cluster" not in init_command(plain).get_raw_value()
