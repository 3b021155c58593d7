"""Red team: a hub URL's login secret never reaches an error or a log line, whatever the URL
looks like (docs/cli.md "several hub URLs"). The real `signalbeam` CLI (several URLs, dead
ports and a real hub with the wrong password) and the real `signalbeam-agent enroll`, on
loopback; every output is searched for the secret and for any piece of it.

Found: a scheme-less URL, a password with an unencoded ``@`` or ``,`` (the list split it in
two) and a token login (``token@host``) were printed in clear or in part; an unclosed IPv6
address was a traceback; the agent's ``--hub`` error quoted the URL whole.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.ports import free_port
from tests.harness.sync_hub import SyncHub

SECRET = "Zq7S3cr3tPW"  # every piece of it is looked for (below)
HEAD, TAIL = SECRET[:5], SECRET[5:]


def dead() -> str:
    return f"127.0.0.1:{free_port()}"


def leaked(text: str) -> list[str]:
    return [p for p in (SECRET, HEAD, TAIL) if p in text]


def run(argv: list[str], env: dict[str, str] | None = None, tmp: Path | None = None) -> str:
    full = {**os.environ, **(env or {})}
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=180, env=full, cwd=tmp, check=False
    )
    assert out.returncode != 0, out
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text
    return text


def cli_urls() -> list[str]:
    return [
        f"nats://operator:{SECRET}@{dead()},nats://operator:{SECRET}@{dead()}",
        f"operator:{SECRET}@{dead()}",  # no scheme
        f"nats://operator:{HEAD}@{TAIL}@{dead()}",  # an unencoded @ in the password
        f"nats://operator:{HEAD},{TAIL}@{dead()}",  # an unencoded comma in the password
        f"nats://{SECRET}@{dead()}",  # a token login
        f"tls://operator:{SECRET}@{dead()}",
        f"nats://operator:{SECRET}@[::1:{free_port()}",  # an unclosed IPv6 address
        f"nats://operator:{SECRET}@127.0.0.1:99999",
    ]


@pytest.mark.parametrize(
    "hub",
    cli_urls(),
    ids=["list", "no-scheme", "at-in-pw", "comma-in-pw", "token", "tls", "ipv6", "port"],
)
def test_the_cli_never_prints_a_url_secret(hub: str, tmp_path: Path) -> None:
    env = {"SIGNALBEAM_API_KEY": "sbk_x", "HOME": str(tmp_path)}
    text = run([sys.executable, "-m", "tui.cli", "--hub", hub, "devices"], env, tmp_path)
    assert "error" in text, text
    assert not leaked(text), text


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    proc = SyncHub(tmp_path_factory.mktemp("rt-url") / "data", init_flags=["--nats-auth", "jwt"])
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


def test_a_real_hub_refusing_a_list_of_urls_names_no_password(hub: SyncHub, tmp_path: Path) -> None:
    urls = f"nats://operator:{SECRET}@{dead()},nats://operator:{SECRET}@127.0.0.1:{hub.port}"
    env = {"SIGNALBEAM_API_KEY": "sbk_x", "HOME": str(tmp_path)}
    text = run([sys.executable, "-m", "tui.cli", "--hub", urls, "devices"], env, tmp_path)
    assert "refused the user or password" in text, text
    assert not leaked(text), text


@pytest.mark.parametrize(
    "url",
    [
        f"nats://enroll:{SECRET}@127.0.0.1:abc",
        f"nats://enroll:{SECRET}@[::1:4222",
        f"http://enroll:{HEAD}@{TAIL}@127.0.0.1:4222",
    ],
    ids=["port", "ipv6", "scheme"],
)
def test_agent_enroll_never_prints_a_url_secret(url: str, tmp_path: Path) -> None:
    # URLs it refuses before connecting (against a dead hub it waits for the hub, by design).
    argv = [sys.executable, "-m", "agent.cli", "enroll", "--hub", url, "--token", "sbt_x"]
    argv += ["--data-dir", str(tmp_path / "agent"), "--device-id", "rt-url", "--timeout", "5"]
    text = run(argv, {"HOME": str(tmp_path)}, tmp_path)
    assert not leaked(text), text
