"""The `signalbeam` CLI against a real running hub: every verb, --json, exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_hub_api import EXAMPLES, HubProcess, seed_devices
from tui.cli import run


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(
        tmp_path_factory.mktemp("hubcli") / "data", litestream=False, seed=seed_devices
    )
    yield proc
    assert proc.stop() == 0


class Cli:
    def __init__(self, hub: HubProcess) -> None:
        self.hub = hub

    def __call__(self, *argv: str, key: str | None = None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        base = ["--hub", self.hub.url, "--api-key", key or self.hub.admin_key]
        code = run([*base, *argv], out, err)
        return code, out.getvalue(), err.getvalue()

    def json(self, *argv: str, key: str | None = None) -> Any:
        code, out, err = self(*argv, "--json", key=key)
        assert code == 0, err or out
        return json.loads(out)


@pytest.fixture
def cli(hub: HubProcess) -> Cli:
    return Cli(hub)


def test_bundle_validate_is_offline_and_prints_every_error_with_its_line(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run(["bundle", "validate", str(EXAMPLES / "1.3.0.yaml")], out, err) == 0
    assert "warehouse-monitor@1.3.0 is valid" in out.getvalue()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "bundle: Bad_Name\nversion: 1.0\ncontainers:\n  - name: a\n    image: nginx\n"
        "    ports:\n      - container: 70000\n"
    )
    out, err = io.StringIO(), io.StringIO()
    assert run(["bundle", "validate", str(bad)], out, err) == 2
    text = err.getvalue()
    assert f"{bad}:1: bundle:" in text
    assert f"{bad}:7: containers[0].ports[0].container:" in text
    assert "error(s)" in text
    out = io.StringIO()
    assert run(["bundle", "validate", str(bad), "--json"], out, io.StringIO()) == 2
    assert json.loads(out.getvalue())["valid"] is False


def test_push_assign_and_read_back(cli: Cli) -> None:
    code, out, _ = cli("bundle", "push", str(EXAMPLES / "1.3.0.yaml"))
    assert code == 0 and "created" in out
    assert cli.json("bundle", "push", str(EXAMPLES / "1.2.0.yaml"))["created"] is True
    assert cli("group", "create", "lab", "--description", "bench rack")[0] == 0
    assert cli("group", "add", "lab", "dev-1")[0] == 0
    code, out, _ = cli("assign", "group:lab", "warehouse-monitor@1.3.0")
    assert code == 0 and "dev-1" in out
    shown = cli.json("device", "show", "dev-1")
    assert shown["desired"] == {
        "bundle": "warehouse-monitor",
        "version": "1.3.0",
        "via": "group:lab",
    }
    code, out, _ = cli("device", "show", "dev-1")
    assert "warehouse-monitor@1.3.0 (via group:lab)" in out
    code, out, _ = cli("bundle", "list")
    assert out.splitlines()[0].split() == ["NAME", "LATEST", "VERSIONS"]
    assert "warehouse-monitor  1.3.0" in out
    assert [v["version"] for v in cli.json("bundle", "versions", "warehouse-monitor")["items"]] == [
        "1.3.0",
        "1.2.0",
    ]
    assert cli.json("bundle", "show", "warehouse-monitor@1.2.0")["version"] == "1.2.0"
    assert cli.json("assignments")["items"][0]["target"] == "group:lab"
    assert cli("unassign", "group:lab")[0] == 0
    assert cli.json("assignments")["items"] == []


def test_devices_tags_groups_events_metrics(cli: Cli) -> None:
    code, out, _ = cli("devices")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split()[:4] == ["ID", "TENANT", "HOSTNAME", "STATUS"] and len(lines) == 6
    assert cli("tag", "dev-3", "prod")[0] == 0
    assert [d["id"] for d in cli.json("devices", "--tag", "prod")["items"]] == ["dev-3"]
    assert cli("untag", "dev-3", "prod")[0] == 0
    page = cli.json("devices", "--limit", "2")
    assert page["next_cursor"] == "dev-1"
    assert "--cursor dev-1" in cli("devices", "--limit", "2")[1]
    assert cli("group", "create", "east")[0] == 0
    assert "east" in cli("group", "list")[1]
    assert cli("group", "add", "east", "dev-4")[0] == 0
    assert cli("group", "remove", "east", "dev-4")[0] == 0
    assert cli("group", "delete", "east")[0] == 0
    events = cli.json("events", "--device", "dev-3")["items"]
    assert [e["kind"] for e in events][:2] == ["untagged", "tagged"]
    assert len(cli.json("metrics", "dev-0", "--resolution", "1m")["items"]) == 5
    assert cli("device", "decommission", "dev-4")[0] == 0
    # The decommission reloads nats-server's users, which drops logins in progress: the next
    # commands connect across that reload.
    code, out, err = cli("devices")
    assert code == 0 and "dev-4" not in out, err
    code, out, err = cli("devices", "--all")
    assert code == 0 and "dev-4" in out, err


def test_tokens_and_keys(cli: Cli) -> None:
    code, out, _ = cli("token", "create", "--tenant", "acme", "--expires", "24h", "--uses", "10")
    assert code == 0 and "sbt_" in out and "shown only now" in out
    tok = cli.json("token", "create", "--tenant", "acme", "--expires", "30m")
    assert tok["max_uses"] == 1
    assert tok["id"] in cli("token", "list")[1]
    assert cli.json("token", "revoke", tok["id"])["revoked"] is True
    key = cli.json("api-key", "create", "ci", "--role", "readonly")
    assert cli("devices", key=key["key"])[0] == 0
    code, _, err = cli("group", "create", "x", key=key["key"])
    assert code == 1 and "[forbidden]" in err
    assert "ci" in cli("api-key", "list")[1]
    assert cli("key", "revoke", key["id"])[0] == 0
    code, _, err = cli("devices", key=key["key"])
    assert code == 1 and "revoked" in err


def test_errors_exit_non_zero_with_the_api_message(cli: Cli) -> None:
    code, _, err = cli("device", "show", "nope")
    assert code == 1 and "no device 'nope'" in err and "[not_found]" in err
    code, out, _ = cli("assign", "planet:x", "warehouse-monitor@1.3.0", "--json")
    assert code == 1 and json.loads(out)["error"]["field"] == "target"
    with pytest.raises(SystemExit) as exc:
        cli("token", "create", "--tenant", "acme", "--expires", "soon")
    assert exc.value.code == 2


def test_entry_point_env_and_exit_codes(hub: HubProcess) -> None:
    env = {**os.environ, "SIGNALBEAM_HUB": hub.url, "SIGNALBEAM_API_KEY": hub.admin_key}
    env["SIGNALBEAM_CONFIG"] = "/nonexistent/config.toml"
    ok = subprocess.run(
        [sys.executable, "-m", "tui.cli", "devices", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["items"]
    env["SIGNALBEAM_API_KEY"] = "sbk_wrong_wrong"
    bad = subprocess.run(
        [sys.executable, "-m", "tui.cli", "devices"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1 and "unknown API key" in bad.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "tui.cli", "token", "create", "--tenant", "a", "--expires", "soon"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert usage.returncode == 2 and "duration" in usage.stderr


def test_unreachable_hub_is_a_clear_error() -> None:
    from tests.harness.ports import free_port

    out, err = io.StringIO(), io.StringIO()
    url = f"nats://u:secret@127.0.0.1:{free_port()}"
    code = run(["--hub", url, "--api-key", "k", "--timeout", "1", "devices"], out, err)
    assert code == 1 and "cannot connect to the hub" in err.getvalue()
    assert "secret" not in err.getvalue()


def test_push_of_an_invalid_file_sends_nothing(cli: Cli, tmp_path: Path) -> None:
    before = cli.hub.snapshot()
    bad = tmp_path / "bad.yaml"
    bad.write_text("bundle: ok\nversion: 1.0.0\ncontainers:\n  - name: a\n    image: nginx\n")
    code, _, err = cli("bundle", "push", str(bad))
    assert code == 2 and f"{bad}:5: containers[0].image" in err and "not pushed" in err
    code, _, err = cli("bundle", "push", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml" in err
    assert cli.hub.snapshot() == before
