"""signalbeam-agent as a user runs it: subprocesses against a real store file.

The running-agent tests point the engine socket at a path where nothing listens, so they
need no container engine: the agent must still start, record that, take desired state and
stop cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.ports import free_port
from tests.harness.wait import eventually_blocking

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "bundles" / "examples" / "warehouse-monitor" / "1.2.0.yaml"


def cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f"""
data_dir = "data"
device_id = "cli-dev"
engine_socket = "unix://{tmp_path}/no-engine.sock"
desired_poll_interval = "1h"  # only apply's SIGUSR1 nudge can be seen in time
[metrics]
interval = "200ms"
[http]
port = {free_port()}
"""
    )
    return cfg


def http_port(config: Path) -> int:
    return int(tomllib.loads(config.read_text())["http"]["port"])


def http_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def jcli(*args: str) -> Any:
    return json.loads(cli(*args, "--json", check=True).stdout)


def test_apply_status_events(config: Path) -> None:
    out = jcli("apply", str(EXAMPLE), "--config", str(config))
    assert out == {"generation": 1, "source": "local", "bundle_ref": "warehouse-monitor@1.2.0"}
    status = jcli("status", "--config", str(config))
    assert status["device_id"] == "cli-dev"
    assert status["desired"]["bundle_ref"] == "warehouse-monitor@1.2.0"
    assert status["desired"]["content_hash"].startswith("sha256:")
    assert status["agent"] == {"running": False, "pid": None}
    assert status["hub"] is None
    assert status["http"]["port"] == http_port(config)
    assert status["http"]["tls_fingerprint"] is None
    events = jcli("events", "--config", str(config))
    assert [e["kind"] for e in events] == ["desired.changed"]
    assert events[0]["data"]["actor"].startswith("cli:")
    human = cli("status", "--config", str(config), check=True).stdout
    assert "warehouse-monitor@1.2.0" in human and "not running" in human

    assert jcli("apply", "--nothing", "--config", str(config))["generation"] == 2
    assert jcli("status", "--config", str(config))["desired"]["bundle_ref"] is None
    assert jcli("apply", "--clear", "--config", str(config)) == {"cleared": True}
    assert jcli("status", "--config", str(config))["desired"] is None
    kinds = [e["kind"] for e in jcli("events", "--config", str(config), "--after-seq", "1")]
    assert kinds == ["desired.changed", "desired.local_cleared"]
    assert len(jcli("events", "--config", str(config), "--limit", "1")) == 1


def test_invalid_bundle_is_refused_with_field_errors(config: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("bundle: x\nversion: nope\ncontainers: []\n")
    proc = cli("apply", str(bad), "--config", str(config), "--json")
    assert proc.returncode == 2
    body = json.loads(proc.stdout)
    assert body["error"]["code"] == "invalid"
    assert any(d["path"] == "version" for d in body["error"]["details"])
    text = cli("apply", str(bad), "--config", str(config))
    assert text.returncode == 2 and "version" in text.stderr
    # Nothing was stored.
    assert (
        not (tmp_path / "data" / "agent.db").exists()
        or jcli("status", "--config", str(config))["desired"] is None
    )
    missing = cli("apply", str(tmp_path / "missing.yaml"), "--config", str(config))
    assert missing.returncode == 2


def test_bad_config_names_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('device_id = "x"\n[reconcile]\ninterval = -1\n')
    proc = cli("status", "--config", str(cfg), "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"]["field"] == "reconcile.interval"


def test_status_without_store_fails_clearly(config: Path) -> None:
    proc = cli("status", "--config", str(config))
    assert proc.returncode == 1 and "no agent store" in proc.stderr


def test_usage_errors() -> None:
    assert cli("apply").returncode == 2
    assert cli("events", "--limit", "-3").returncode == 2
    assert cli("status", "--log-format", "xml").returncode == 2


@pytest.fixture
def agent_proc(config: Path) -> Iterator[subprocess.Popen[str]]:
    log = (config.parent / "agent.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config), "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
        cwd=REPO,
    )
    yield proc
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    log.close()


def log_records(config: Path) -> list[dict[str, Any]]:
    text = (config.parent / "agent.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_running_agent_takes_local_desired_and_stops_cleanly(
    config: Path, agent_proc: subprocess.Popen[str]
) -> None:
    def kinds() -> list[str]:
        proc = cli("events", "--config", str(config), "--json", "--limit", "100")
        return [e["kind"] for e in json.loads(proc.stdout)] if proc.returncode == 0 else []

    eventually_blocking(
        lambda: "engine.unavailable" in kinds(), "engine.unavailable event", interval=0.1
    )
    # `run` wires the local HTTP API in.
    eventually_blocking(lambda: http_ok(http_port(config)), "the local HTTP API", interval=0.1)
    status = jcli("status", "--config", str(config))
    assert status["agent"] == {"running": True, "pid": agent_proc.pid}
    eventually_blocking(
        lambda: jcli("status", "--config", str(config))["metrics"], "metrics samples", interval=0.1
    )

    # A second agent on the same data dir refuses to start.
    second = cli("run", "--config", str(config))
    assert second.returncode == 3 and "another agent" in second.stderr

    # The config's hour-long poll means only apply's SIGUSR1 nudge can deliver this.
    jcli("apply", str(EXAMPLE), "--config", str(config))
    eventually_blocking(
        lambda: any(
            r["msg"].startswith("desired state changed: local generation 1")
            for r in log_records(config)
        ),
        "the agent to notice the applied bundle",
        interval=0.1,
    )
    agent_proc.send_signal(signal.SIGTERM)
    assert agent_proc.wait(timeout=20) == 0
    records = log_records(config)
    assert all(r.get("device") == "cli-dev" for r in records if r["logger"] == "agent.daemon")
    assert kinds()[-1] == "agent.stopped"
    assert jcli("status", "--config", str(config))["agent"]["running"] is False


def test_apply_refuses_a_store_of_another_device(config: Path, tmp_path: Path) -> None:
    jcli("apply", "--nothing", "--config", str(config))
    other = tmp_path / "other.toml"
    other.write_text(config.read_text().replace('device_id = "cli-dev"', 'device_id = "other"'))
    proc = cli("apply", "--nothing", "--config", str(other), "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"]["field"] == "device_id"


def test_status_shows_what_sync_last_wrote(config: Path) -> None:
    jcli("apply", "--nothing", "--config", str(config))
    # The file a running sync task rewrites (agent.sync.service.read_status_file reads it).
    (config.parent / "data" / "sync-status.json").write_text(
        json.dumps(
            {"mode": "leaf", "online": False, "last_contact": 1795000000.0, "last_error": "cut"}
        )
    )
    assert jcli("status", "--config", str(config))["hub"]["mode"] == "leaf"
    human = cli("status", "--config", str(config), check=True).stdout
    assert "hub         unreachable since 2026-" in human and "(leaf): cut" in human
