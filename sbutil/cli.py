"""What the three commands (``signalbeam``, ``signalbeam-agent``, ``signalbeam-hub``) share on
the command line: ``--version``, one error line with a suggestion for an unknown verb, and a
quiet end when stdout is a pipe the reader closed (``| head -1``).

Standard library only, and cheap to import: ``signalbeam --help`` loads this and argparse.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

# The package version (pyproject.toml's [project] version; tests/unit/test_cli_output.py
# checks they agree). Not read from package metadata: importlib.metadata costs more than the
# whole of `signalbeam --help` should.
VERSION = "0.1.0"
EXIT_USAGE = 2


def suggest(word: str, choices: Iterable[str]) -> list[str]:
    """The choices an operator probably meant: close spellings, else those it starts."""
    import difflib  # only on the error path

    options = sorted(choices)
    close = difflib.get_close_matches(word, options, n=2, cutoff=0.6)
    if close:
        return close
    return [c for c in options if word and c.startswith(word)][:2]


def unknown_verb_message(prog: str, word: str, choices: Iterable[str]) -> str:
    options = sorted(choices)
    hint = suggest(word, options)
    if hint:
        tail = "did you mean " + " or ".join(repr(h) for h in hint) + "?"
    else:
        tail = "verbs: " + ", ".join(options)
    return f"{prog}: error: unknown verb {word!r} ({tail})"


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose unknown verb is one line on stderr and exit 2.

    argparse's own answer is the usage block and the whole list of choices; an operator who
    typed ``signalbeam devcies`` wants the one word they meant. Sub-parsers made with
    ``add_subparsers`` are of this class too (argparse uses the parent's class).
    """

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if (
            isinstance(action, argparse._SubParsersAction)  # argparse has no public name
            and action.choices is not None
            and value not in action.choices
        ):
            self.exit(
                EXIT_USAGE, unknown_verb_message(self.prog, str(value), action.choices) + "\n"
            )
        super()._check_value(action, value)


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version", action="version", version=f"{parser.prog} {VERSION}", help="print the version"
    )


def quiet_pipe(main: Callable[[], int]) -> int:
    """Run ``main``; a closed stdout (the reader went away) or Ctrl-C ends it quietly.

    The interpreter flushes stdout once more at exit, after any handler here, so a closed pipe
    would still print "Exception ignored ... BrokenPipeError": stdout is pointed at
    /dev/null first. Exit 0 for a closed pipe: the reader had what it wanted.
    """
    try:
        code = main()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _drop_stdout()
        return 0
    except KeyboardInterrupt:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _drop_stdout()
        return 130


def _drop_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # stdout is no real file (a test's StringIO): nothing will flush it at exit
