"""The TUI's one exception tree (tui/errors.py) and its one exit-code rule, as the
`signalbeam` boundary applies it."""

from __future__ import annotations

import argparse
import io

import pytest

from tui import errors
from tui.cli import report_error
from tui.client import ApiError
from tui.commands import CommandError, parse_command
from tui.config import ConfigError
from tui.models.fleet import FilterError, parse_filter


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("timeout must be positive"), errors.EXIT_USAGE),
        (CommandError("unknown command :x"), errors.EXIT_USAGE),
        (FilterError("tag: needs a value"), errors.EXIT_USAGE),
        (ApiError("unavailable", "cannot connect"), errors.EXIT_HUB),
    ],
)
def test_every_tui_error_has_the_root_and_says_its_exit_code(
    exc: errors.TuiError, code: int
) -> None:
    assert isinstance(exc, errors.TuiError)
    assert errors.exit_code(exc) == code


def test_the_parsers_raise_errors_of_the_tree() -> None:
    with pytest.raises(errors.UsageError):
        parse_command("nonsense-command")
    with pytest.raises(errors.UsageError):
        parse_filter("tag:")
    with pytest.raises(ValueError):  # still ValueErrors, for callers that catch those
        parse_filter("tag:")


def test_the_boundary_translates_ours_and_lets_a_bug_through() -> None:
    args = argparse.Namespace(output=None, json=False)
    out, err = io.StringIO(), io.StringIO()
    assert report_error(ConfigError("no hub"), args, out, err) == errors.EXIT_USAGE
    assert err.getvalue() == "error: no hub\n"
    assert report_error(ApiError("not_found", "no such device"), args, out, err) == 1
    assert errors.exit_code(RuntimeError("a bug")) is None
    assert report_error(RuntimeError("a bug"), args, out, err) is None
