"""How `signalbeam tui` starts: the parser hook, config errors, and bare `signalbeam`: the
TUI in a terminal (run for real in a pseudo-terminal), help without one."""

from __future__ import annotations

import argparse
import fcntl
import io
import os
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.harness.ports import free_port
from tui.app import add_tui_command, main
from tui.cli import _has_verb, build_parser, run
from tui.errors import EXIT_HUB, EXIT_USAGE


def test_add_tui_command_parses_connection_flags() -> None:
    parser = argparse.ArgumentParser(prog="signalbeam")
    add_tui_command(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["tui", "--hub", "nats://127.0.0.1:4999", "--timeout", "2"])
    assert args.tui_main is main and args.hub == "nats://127.0.0.1:4999" and args.timeout == 2
    assert not hasattr(parser.parse_args(["tui"]), "hub")  # unset flags fall back to env/file


def test_bad_config_file_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text('hub = "nats://127.0.0.1:4222"\ncolour = "blue"\n')
    monkeypatch.setenv("SIGNALBEAM_CONFIG", str(bad))
    assert main(argparse.Namespace()) == EXIT_USAGE
    assert "unknown setting 'colour'" in capsys.readouterr().err


def test_bare_signalbeam_without_a_terminal_prints_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """A script or pipe running bare `signalbeam` gets the verbs and a usage exit code, not a
    UI it cannot drive (here stdout is a StringIO, not a TTY)."""
    out, err = io.StringIO(), io.StringIO()
    assert run(["--hub", "nats://127.0.0.1:9"], out=out, err=err) == EXIT_USAGE
    assert out.getvalue().startswith("usage: signalbeam") and "tui" in out.getvalue()
    assert err.getvalue() == ""


def test_has_verb_ignores_the_connection_options() -> None:
    parser = build_parser()
    assert not _has_verb(parser, [])
    assert not _has_verb(parser, ["--hub", "nats://127.0.0.1:4222", "--api-key", "k"])
    assert _has_verb(parser, ["devices", "list"]) and _has_verb(parser, ["tui"])
    assert _has_verb(parser, ["--help"]) and _has_verb(parser, ["-h"])


def _read_until(fd: int, want: bytes, seen: bytearray, timeout: float = 120.0) -> bool:
    """Read the pty until ``want`` appears (bounded), keeping everything read in ``seen``."""
    deadline = time.monotonic() + timeout
    while want not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                return want in seen
            if not chunk:
                return want in seen
            seen.extend(chunk)
    return True


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_bare_signalbeam_in_a_terminal_opens_the_tui(tmp_path: Path) -> None:
    """The real entry point in a real pseudo-terminal: the TUI opens (its title, then the
    unreachable-hub banner for a port nothing listens on), `q` quits it, exit 1 (it never
    reached a hub)."""
    primary, secondary = os.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "SIGNALBEAM_CONFIG": str(tmp_path / "none.toml"),
        "TERM": "xterm-256color",
    }
    env.pop("SIGNALBEAM_API_KEY", None)
    env.pop("TEXTUAL", None)  # no devtools
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "--hub", f"nats://127.0.0.1:{free_port()}"],
        stdin=secondary, stdout=secondary, stderr=secondary, env=env, close_fds=True,
    )  # fmt: skip
    os.close(secondary)
    seen = bytearray()
    try:
        assert _read_until(primary, b"SignalBeam Edge", seen), bytes(seen[-2000:])
        assert _read_until(primary, b"retrying", seen), bytes(seen[-2000:])
        os.write(primary, b"q")
        # Keep draining the terminal while it exits: the banner repaints every second, and
        # a child blocked writing to a full pty never exits (a starved machine quits slowly
        # enough to fill it: seen as a 120 s timeout at load 7 on 2 cores).
        deadline = time.monotonic() + 120  # a bound for a starved machine
        while proc.poll() is None and time.monotonic() < deadline:
            _read_until(primary, b"\x00never", seen, timeout=0.5)
        assert proc.wait(timeout=5) == EXIT_HUB
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(primary)
