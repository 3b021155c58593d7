"""Every error about bundle text says which line, in words about the field, never Python's.

Table-driven over each kind of error the reader and validator raise (one row each), then a
property test: valid documents written as YAML or JSON, with hostile scalars spliced into
their text (5,000-digit integers, impossible dates, control characters, deep nesting, JSON
escapes YAML lacks), must fail, if they fail, with a line on every error.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundles import BundleError, BundleInvalid, FieldError, load_file, parse_bundle
from bundles.checks.base import MAX_ERRORS
from bundles.source import MAX_DEPTH
from bundles.validate import MAX_BUNDLE_BYTES
from tests.unit.test_bundle_properties import check_outcome, valid_docs

HEAD = "bundle: demo\nversion: 1.0.0\ncontainers:\n  - name: web\n    image: r.example/web:1.0\n"
HEAD_LINES = HEAD.count("\n")
BIG = "9" * 5000


def errors_of(text: str | bytes) -> list[FieldError]:
    with pytest.raises(BundleInvalid) as info:
        parse_bundle(text)
    return info.value.errors


def _many_errors() -> str:
    env = "".join(f"      E{i}: {i}\n" for i in range(MAX_ERRORS + 5))
    return HEAD + "    env:\n" + env


# (kind, text, path, fragment of the message, line)
KINDS: list[tuple[str, str | bytes, str, str, int]] = [
    ("larger than the limit", "a: b\n" * (MAX_BUNDLE_BYTES // 5 + 10), "$", "larger than", 52429),
    ("not UTF-8", b"bundle: demo\nversion: \xff\n", "$", "not UTF-8", 2),
    ("control character", "bundle: demo\n\x01version: 1\n", "$", "U+0001", 2),
    ("empty", "", "$", "is empty", 1),
    ("only comments", "# a\n# b\n", "$", "is empty", 1),
    ("YAML syntax", "bundle: [\n", "$", "YAML syntax error", 2),
    ("two documents", "a: 1\n---\nb: 2\n", "$", "another document", 2),
    (
        "impossible date",
        HEAD + "    env:\n      D: 2001-02-30\n",
        "containers[0].env.D",
        "timestamp",
        7,
    ),
    ("impossible time", "description: 2001-12-14 25:61:00\n", "description", "timestamp", 1),
    (
        "5000-digit port",
        HEAD + f"    ports:\n      - container: {BIG}\n",
        "containers[0].ports[0].container",
        "must be 1-65535",
        7,
    ),
    (
        "5000-digit env value",
        HEAD + f"    env:\n      X: {BIG}\n",
        "containers[0].env.X",
        "5000-digit integer",
        7,
    ),
    (
        "5000-digit key",
        HEAD + f"    env:\n      ? {BIG}\n      : x\n",  # explicit key: over 1024 chars
        "containers[0].env",
        "very large integer",
        6,
    ),
    (
        "5000-digit in JSON",
        '{"bundle": "demo",\n "version": ' + BIG + "}",
        "version",
        "must be a string",
        2,
    ),
    (
        "nested YAML",
        "\n" * 3 + "x:\n" + "  - " * 200 + "1\n",
        "$",
        f"more than {MAX_DEPTH} levels",
        5,
    ),
    ("nested JSON", "\n\n[" + "[" * 50_000 + "]" * 50_001, "$", f"more than {MAX_DEPTH} levels", 3),
    (
        "nested JSON object",
        '{"a":' * 5000 + "1" + "}" * 5000,
        "$",
        f"more than {MAX_DEPTH} levels",
        1,
    ),
    (
        "JSON escape YAML lacks",
        '{"bundle": "demo",\n "description": "a\\/b",\n "version": 1}',
        "version",
        "must be a string",
        3,
    ),
    (
        "JSON tabs",
        '{\n\t"bundle": "demo",\n\t"version": "1.0.0",\n\t"containers": 5}',
        "containers",
        "must be a list",
        4,
    ),
    ("JSON duplicate key", '{"bundle": "a",\n "bundle": "b"}', "bundle", "duplicate key", 2),
    ("missing field", "bundle: demo\n", "version", "is required", 1),
    ("too many errors", _many_errors(), "$", "more errors not shown", HEAD_LINES + 2 + MAX_ERRORS),
    ("python tag", "bundle: !!python/name:os.system\n", "$", "YAML syntax error", 1),
]


@pytest.mark.parametrize("kind,text,path,fragment,line", KINDS, ids=[k[0] for k in KINDS])
def test_every_kind_of_error_has_its_line(
    kind: str, text: str | bytes, path: str, fragment: str, line: int
) -> None:
    errors = errors_of(text)
    assert all(e.line is not None for e in errors), errors
    match = [e for e in errors if e.path == path and fragment in e.message]
    assert match, errors
    assert match[-1].line == line, match
    for e in errors:
        assert "sys." not in e.message and "Traceback" not in e.message, e


def test_a_5000_digit_integer_says_what_is_wrong_with_the_field() -> None:
    (err,) = errors_of(HEAD + f"    ports:\n      - container: {BIG}\n")
    assert str(err) == "containers[0].ports[0].container: must be 1-65535 (line 7)"


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_load_file_refuses_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        path = tmp_path / "bundle.yaml"
        os.mkfifo(path)  # no writer: an open() without O_NONBLOCK would wait forever
    elif kind == "directory":
        path = tmp_path
    else:
        path = Path("/dev/null")
    assert not stat.S_ISREG(path.stat().st_mode)
    with pytest.raises(BundleError) as info:
        load_file(path)
    assert not isinstance(info.value, BundleInvalid)
    assert "not a regular file" in str(info.value)


# ---------------------------------------------------------------- property

HOSTILE = [
    BIG,
    "-" + BIG,
    "2001-02-30",
    "2001-12-14 25:61:00",
    "\x01",
    "[" * 300,
    '"a\\/b"',
    "\t",
    "!!binary x",
    "&a",
    "*nope",
    "{",
    "? x",
    "%",
    "@",
    "\ufeff",
]


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(valid_docs(), st.booleans(), st.data())
def test_every_error_on_text_has_a_line(doc: dict[str, Any], as_json: bool, data: Any) -> None:
    text = (
        json.dumps(doc, indent=data.draw(st.sampled_from([None, 1, 2, "\t"])))
        if as_json
        else yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    )
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 12))
        text = text[:pos] + data.draw(st.sampled_from(HOSTILE)) + text[pos + cut :]
    check_outcome(lambda: parse_bundle(text), text)
