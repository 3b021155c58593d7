"""``signalbeam vars set|unset|list`` and ``signalbeam secrets set|unset|list``.

Kept apart from ``tui/cli.py`` (one call to ``add_vars_commands`` there). A scope is one of
``--fleet``, ``--group NAME`` or ``--device ID`` (docs/bundles.md "Variables and secrets":
device over group over fleet). A secret's value is read from stdin or ``--from-file``, never
from the command line, where ``ps`` and the shell's history would show it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TextIO

from tui.errors import UsageError
from tui.output import table

Printer = Callable[..., None]


def _scope_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--fleet", action="store_true", help="every device")
    g.add_argument("--group", metavar="NAME", help="the devices of this group")
    g.add_argument("--device", metavar="ID", help="this device")


def _scope(a: argparse.Namespace) -> dict[str, Any]:
    if a.device:
        return {"scope": "device", "target": a.device}
    if a.group:
        return {"scope": "group", "target": a.group}
    if a.fleet:
        return {"scope": "fleet"}
    return {}


def read_secret(path: str | None, stdin: TextIO | None = None) -> str:
    """The value from ``path`` (``-``: stdin) or stdin; one trailing newline is dropped (what
    ``echo`` and most editors add). Asked without echo on a terminal."""
    # Imported here: the ``bundles`` package loads hashlib and YAML, which no other verb of
    # this module (nor ``--help``) needs.
    from bundles.variables import MAX_VALUE_LEN

    stdin = stdin or sys.stdin
    if path is None or path == "-":
        if stdin.isatty():
            import getpass

            return getpass.getpass("secret value (not echoed): ")
        raw = stdin.read(MAX_VALUE_LEN + 2)
    else:
        try:
            with open(path, encoding="utf-8") as f:
                raw = f.read(MAX_VALUE_LEN + 2)
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --from-file {path}: {exc}") from None
    if raw.endswith("\n"):
        raw = raw[:-1]
    if len(raw) > MAX_VALUE_LEN:
        raise UsageError(f"the secret is longer than {MAX_VALUE_LEN} characters")
    if not raw:
        raise UsageError("the secret value is empty (give it on stdin or with --from-file)")
    return raw


def print_set(r: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    where = r["scope"] if not r.get("target") else f"{r['scope']}:{r['target']}"
    print(f"{r['kind']} {r['name']} at {where}: {'changed' if r.get('changed') else 'unchanged'}",
          file=out)  # fmt: skip
    if r.get("devices"):
        print(f"desired state re-sent to {r['devices']} device(s)", file=out)


def _print_list(shown: str) -> Printer:
    def printer(r: dict[str, Any], out: TextIO, wide: bool = False) -> None:
        rows = [
            {**i, "scope": i["scope"] if not i.get("target") else f"{i['scope']}:{i['target']}"}
            for i in r.get("items", [])
        ]
        table(rows, ["name", "scope", shown, "set_by", "set_at"], out, wide=wide)

    return printer


def add_vars_commands(
    add: Callable[..., argparse.ArgumentParser], printers: dict[str, Printer]
) -> None:
    for noun, kind in (("vars", "vars"), ("secrets", "secrets")):
        what = "variables" if noun == "vars" else "secrets"
        sub = add(noun, f"per-device {what} for bundle env (fleet, group or device)")
        verbs = sub.add_subparsers(dest=f"{noun}_verb", required=True)
        p = add("set", f"set a {what[:-1]} for --fleet, --group NAME or --device ID", verbs)
        p.add_argument("name")
        if noun == "vars":
            p.add_argument("value")
        else:
            p.add_argument(
                "--from-file", metavar="PATH",
                help="read the value from this file (default: stdin; never an argument)",
            )  # fmt: skip
        _scope_args(p)

        def set_request(a: argparse.Namespace, kind: str = kind) -> tuple[str, dict[str, Any]]:
            value = a.value if kind == "vars" else read_secret(a.from_file)
            return f"{kind}.set", {**_scope(a), "name": a.name, "value": value}

        p.set_defaults(request=set_request)
        p = add("unset", f"remove a {what[:-1]} from a scope", verbs)
        p.add_argument("name")
        _scope_args(p)
        p.set_defaults(
            request=lambda a, kind=kind: (f"{kind}.unset", {**_scope(a), "name": a.name})
        )
        p = add("list", f"list the {what} set (all scopes, or one)", verbs)
        _scope_args(p, required=False)
        p.set_defaults(request=lambda a, kind=kind: (f"{kind}.list", _scope(a)))
        printers[f"{kind}.set"] = print_set
        printers[f"{kind}.unset"] = print_set
    printers["vars.list"] = _print_list("value")
    printers["secrets.list"] = _print_list("fingerprint")
