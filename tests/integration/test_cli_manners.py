"""The `signalbeam` CLI's manners against a real running hub (test_cli_e2e.py's style): an
unknown verb is one line with a suggestion and exit 2 (in a terminal too), --version on all
three commands, -o json|yaml|wide, human sizes and ages, a closed pipe ends quietly,
`events --follow` streams and ends quietly on Ctrl-C or at its bound, and the connection
errors name what to fix."""

from __future__ import annotations

import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.store import Store
from tests.integration.test_cli_e2e import Cli
from tests.integration.test_hub_api import EXAMPLES, HubProcess, seed_devices
from tui.cli import run

ROOT = Path(__file__).resolve().parents[2]


def seed(store: Store) -> None:
    seed_devices(store)
    minute = int(time.time()) // 60 * 60 - 120
    store.put_metrics("1m", "dev-1", [("mem.available_bytes", minute, 8.2e10, 8.205e10, 8.21e10)])


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(tmp_path_factory.mktemp("hubmanners") / "data", litestream=False, seed=seed)
    yield proc
    assert proc.stop() == 0


@pytest.fixture
def cli(hub: HubProcess) -> Cli:
    return Cli(hub)


def env_for(hub: HubProcess | None) -> dict[str, str]:
    env = {**os.environ, "SIGNALBEAM_CONFIG": "/nonexistent/config.toml", "PYTHONPATH": str(ROOT)}
    if hub is not None:
        env.update(SIGNALBEAM_HUB=hub.url, SIGNALBEAM_API_KEY=hub.admin_key)
    return env


def signalbeam(*argv: str, hub: HubProcess | None = None, module: str = "tui.cli") -> Any:
    return subprocess.run(
        [sys.executable, "-m", module, *argv],
        env=env_for(hub),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- verbs and versions ------------------------------------------------------------------
def test_unknown_verb_is_one_line_with_a_suggestion() -> None:
    done = signalbeam("devcies")
    assert done.returncode == 2 and done.stdout == ""
    assert (
        done.stderr
        == "signalbeam: error: unknown verb 'devcies' (did you mean 'devices' or 'device'?)\n"
    )
    done = signalbeam("device", "restrat", "dev-1", "x")
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        "signalbeam device: error: unknown verb 'restrat' (did you mean 'restart'"
    )
    for module in ("agent.cli", "hub.cli"):
        done = signalbeam("rnu", module=module)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
        assert "did you mean 'run'?" in done.stderr


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_unknown_verb_in_a_terminal_is_the_same_line_not_the_tui() -> None:
    """In a terminal, bare `signalbeam` opens the TUI; a mistyped verb must not."""
    controller, terminal = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tui.cli", "devcies"],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env=env_for(None),
            start_new_session=True,
        )
        os.close(terminal)
        seen = bytearray()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:
                    break  # the child closed the terminal
                if not chunk:
                    break
                seen.extend(chunk)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=60)
    finally:
        os.close(controller)
    assert code == 2
    lines = [line for line in bytes(seen).decode().splitlines() if line.strip()]
    assert lines == [
        "signalbeam: error: unknown verb 'devcies' (did you mean 'devices' or 'device'?)"
    ]


def test_version_on_all_three_commands() -> None:
    for module, name in (("tui.cli", "signalbeam"), ("agent.cli", "signalbeam-agent"),
                         ("hub.cli", "signalbeam-hub")):  # fmt: skip
        done = signalbeam("--version", module=module)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{name} 0.1.0"


# --- output ------------------------------------------------------------------------------
def test_output_json_yaml_and_wide(cli: Cli) -> None:
    as_json = cli.json("device", "show", "dev-1")
    code, out, _ = cli("device", "show", "dev-1", "-o", "yaml")
    assert code == 0 and yaml.safe_load(out) == as_json
    code, out, _ = cli("-o", "json", "devices")
    assert code == 0 and json.loads(out)["items"][0]["id"] == "dev-0"
    code, narrow, _ = cli("devices")
    code, wide, _ = cli("devices", "-o", "wide")
    assert narrow.splitlines()[0].split() == ["ID", "TENANT", "HOSTNAME", "STATUS", "LAST_SEEN",
                                              "TAGS", "GROUPS"]  # fmt: skip
    assert wide.splitlines()[0].split()[-4:] == ["ARCH", "OS", "ENGINE", "AGENT_VERSION"]
    code, out, _ = cli("device", "show", "nope", "-o", "yaml")
    assert code == 1 and yaml.safe_load(out)["error"]["code"] == "not_found"


def test_text_output_has_human_sizes_and_ages(cli: Cli) -> None:
    code, out, _ = cli("metrics", "dev-1")
    assert code == 0, out
    head, row = out.splitlines()[:2]
    assert head.split() == ["NAME", "AGE", "MIN", "AVG", "MAX"]
    assert row.split()[0] == "mem.available_bytes"
    assert "76.4 GiB" in row and " ago" in row, row
    raw = cli.json("metrics", "dev-1")["items"][0]
    assert isinstance(raw["ts"], int) and raw["avg"] == 8.205e10  # scripts get the values
    code, out, _ = cli("device", "show", "dev-1")
    # An age under a second reads "now", otherwise "Ns ago": either is a human age.
    assert "{" not in out and re.search(r"^enrolled +(now|\S+ ago)$", out, re.M), out
    code, out, _ = cli("api-key", "list")
    assert out.splitlines()[0].split()[3] == "CREATED" and re.search(r"\b(now|\S+ ago)\b", out)


# --- pipes -------------------------------------------------------------------------------
def closed_pipe(argv: list[str], hub: HubProcess | None) -> subprocess.Popen[bytes]:
    """The command with a stdout whose reader is gone before it writes a byte: its first
    write or flush fails with EPIPE, every time (what `| head -1` does sometimes)."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tui.cli", *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            env=env_for(hub),
        )
    finally:
        os.close(write)
    proc.wait(timeout=120)
    return proc


def test_a_closed_pipe_ends_quietly(hub: HubProcess, cli: Cli) -> None:
    assert cli("bundle", "push", str(EXAMPLES / "1.3.0.yaml"))[0] == 0
    started = cli.json("rollout", "start", "warehouse-monitor@1.3.0", "--target", "tag:rpi")
    for argv in (
        ["--help"],
        ["bundle", "validate", str(EXAMPLES / "1.3.0.yaml")],
        ["rollout", "status", started["id"]],
        ["devices", "-o", "yaml"],
    ):
        proc = closed_pipe(argv, hub)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        assert (proc.returncode, err) == (0, ""), (argv, err)
    done = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m tui.cli rollout status {started['id']} | head -1"],
        env=env_for(hub),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith(started["id"])


# --- streaming ---------------------------------------------------------------------------
class Lines:
    """A child's stdout read line by line with a bound, on the raw fd: select() on a
    buffered file would miss a second line already in its buffer."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.lines: list[str] = []

    def until(self, want: str, timeout: float = 60.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, line in enumerate(self.lines):
                if want in line:
                    return self.lines[: i + 1]
            ready, _, _ = select.select([self.fd], [], [], 0.5)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                self.buf += chunk
                *done, self.buf = self.buf.split(b"\n")
                self.lines += [d.decode() for d in done]
        raise AssertionError(f"{want!r} not printed within {timeout}s: {self.lines}")


def test_events_follow_streams_new_events_and_stops_quietly(hub: HubProcess, cli: Cli) -> None:
    assert cli("tag", "dev-2", "before")[0] == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "events", "--follow", "--device", "dev-2"],
        env=env_for(hub),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        lines = Lines(proc)
        lines.until("before")  # the recent events first
        assert cli("tag", "dev-2", "while-following")[0] == 0
        shown = lines.until("while-following")  # then the new one, as it comes
        assert shown[-1].split()[1:] == ["dev-2", "tagged", "while-following"]
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, raw = proc.communicate(timeout=60)
        err = raw.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0 and err == "", err

    # Bounded: --follow-for ends it on its own, and says so.
    out, err = io.StringIO(), io.StringIO()
    base = ["--hub", hub.url, "--api-key", hub.admin_key]
    assert run([*base, "events", "-f", "--follow-for", "1s", "--device", "dev-2"], out, err) == 0
    assert "while-following" in out.getvalue()
    assert "stopped following after 1s" in err.getvalue()


# --- connection errors -------------------------------------------------------------------
def test_wrong_password_is_unauthorized_and_a_missing_key_names_the_setting(
    hub: HubProcess,
) -> None:
    user, rest = hub.url.split("@", 1)
    wrong = user.rsplit(":", 1)[0] + ":not-the-password@" + rest
    out, err = io.StringIO(), io.StringIO()
    assert run(["--hub", wrong, "--api-key", hub.admin_key, "devices"], out, err) == 1
    assert "[unauthorized]" in err.getvalue() and "not-the-password" not in err.getvalue()
    assert "refused the user or password" in err.getvalue()
    env = {k: v for k, v in env_for(hub).items() if k != "SIGNALBEAM_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "devices"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "--api-key" in done.stderr and "SIGNALBEAM_API_KEY" in done.stderr
    assert "Sb-Api-Key" not in done.stderr


# --- start-up ----------------------------------------------------------------------------
def test_each_verb_loads_only_what_it_needs(hub: HubProcess) -> None:
    """--help loads none of these (not even hashlib, whose OpenSSL is ~4 MiB); bundle
    validate no NATS client; a hub verb the NATS client without aiohttp (nats-py wants that
    only for ws:// hubs), through the real entry point."""
    probe = (
        "import sys; from tui.cli import main\n"
        "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
        "loaded = [m for m in ('nats', 'aiohttp', 'textual', 'yaml', 'hashlib') "
        "if sys.modules.get(m) is not None]; "
        "print('LOADED', ','.join(loaded), file=sys.stderr); sys.exit(code)"
    )

    def loaded(*argv: str) -> set[str]:
        done = subprocess.run(
            [sys.executable, "-c", probe, *argv],
            env=env_for(hub),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        line = next(x for x in done.stderr.splitlines() if x.startswith("LOADED"))
        return set(line.split(" ", 1)[1].split(",")) - {""}

    assert loaded("--help") == set()
    assert loaded("bundle", "validate", str(EXAMPLES / "1.3.0.yaml")) - {"hashlib"} == {"yaml"}
    assert loaded("devices") - {"hashlib"} == {"nats"}  # TLS support loads hashlib
