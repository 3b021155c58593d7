"""``signalbeam-agent token create|list|revoke`` through ``add_token_commands``, on a real
store file: the first admin token is made here, and each change lands in the event log."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agent.http.cli import add_token_commands
from agent.http.tokens import TokenStore
from agent.store import Store


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="signalbeam-agent")
    sub = parser.add_subparsers(dest="command", required=True)
    add_token_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Store.open(tmp_path / "agent.db", device_id="cli-dev").close()
    d = ["--data-dir", str(tmp_path)]
    assert run(["token", "create", "--name", "first-admin", "--role", "admin", "--json", *d]) == 0
    created = json.loads(capsys.readouterr().out)
    tokens = TokenStore.in_data_dir(tmp_path)
    info = tokens.verify(created["token"])
    assert info is not None and info.role == "admin" and info.created_by.startswith("local:")
    tokens.close()

    assert run(["token", "create", "--name", "first-admin", *d]) == 2  # name taken
    assert "already exists" in capsys.readouterr().err

    assert run(["token", "list", *d]) == 0
    out = capsys.readouterr().out
    assert "first-admin" in out and created["token"] not in out

    assert run(["token", "revoke", created["id"], *d]) == 0
    assert run(["token", "revoke", "ffffffffffff", *d]) == 2
    assert run(["token", "list", "--all", "--json", *d]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tokens"]
    assert listed[0]["revoked_at"] is not None

    with Store.open(tmp_path / "agent.db") as store:
        kinds = [e.kind for e in store.events(limit=100)]
        assert kinds.count("local.token_created") == 1
        assert kinds.count("local.token_revoked") == 1
        assert all(created["token"] not in repr(e) for e in store.events(limit=100))


def test_bad_role_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        run(["token", "create", "--name", "x", "--role", "root", "--data-dir", str(tmp_path)])
    assert exc.value.code == 2


def test_token_before_the_first_agent_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No store yet: the token is still made (nothing to audit into until the agent runs).
    assert run(["token", "create", "--name", "early", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("sbt_")
    assert not (tmp_path / "agent.db").exists()
