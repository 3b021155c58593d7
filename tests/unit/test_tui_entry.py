"""How `signalbeam tui` starts: the parser hook and config errors (no app is run here)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tui.app import EXIT_USAGE, add_tui_command, main


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
