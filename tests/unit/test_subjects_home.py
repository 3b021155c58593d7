"""protocol/subjects.py says every subject is built there: no other module of the product
spells one (a string literal starting ``sb.``, ``$KV.``, ``$JS.``, ``$SRV.`` or ``_INBOX.``)
or builds one from its parts (an f-string adding a token, ``.>`` or ``.*``, to a prefix)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "hub", "tui", "protocol", "bundles", "sbutil")
PREFIXES = ("sb.", "$KV.", "$JS.", "$SRV.", "_INBOX.")
WILDCARD_TAILS = (".>", ".*")


def subject_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and node.value.startswith(PREFIXES)
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
        if (
            isinstance(node, ast.JoinedStr)
            and node.values
            and isinstance(node.values[-1], ast.Constant)
            and isinstance(node.values[-1].value, str)
            and node.values[-1].value.endswith(WILDCARD_TAILS)
        ):
            found.append(
                f"{path.relative_to(ROOT)}:{node.lineno}: f-string ending {node.values[-1].value!r}"
            )
    return found


def test_every_subject_is_built_in_protocol_subjects() -> None:
    found = [
        hit
        for pkg in PACKAGES
        for path in sorted((ROOT / pkg).rglob("*.py"))
        if path != ROOT / "protocol" / "subjects.py"
        for hit in subject_literals(path)
    ]
    assert found == []
