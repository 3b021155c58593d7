"""``signalbeam bundle ...`` (validate, push, list, versions, show) and the assignment verbs
(``assign``, ``unassign``, ``assignments``). Kept apart from tui/cli.py, as rollout_cli and
device_cli are; ``bundles`` (YAML parsing, hashing) is imported only by the verbs that read a
bundle file, so ``signalbeam --help`` and the hub verbs never load it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, TextIO

from tui.cliutil import Request, output_format, request_body
from tui.errors import EXIT_USAGE
from tui.output import structured, table
from tui.signing_cli import add_push_flags
from tui.signing_cli import request_bundle_push as signing_request_bundle_push

Add = Callable[..., argparse.ArgumentParser]


def add_bundle_commands(add: Add, printers: dict[str, Callable[..., None]]) -> Any:
    """Add the ``bundle`` verb with ``add`` (tui.cli's helper) and its printers; returns its
    subparsers, which signing_cli adds ``sign`` and ``resign`` to."""
    bundle = add("bundle", "app bundles").add_subparsers(dest="bundle_verb", required=True)
    p = add("validate", "check a bundle file offline, printing every error with its line", bundle)
    p.add_argument("file")
    p.set_defaults(offline=cmd_bundle_validate)
    p = add("push", "validate and upload a bundle version (signed: see --sign)", bundle)
    p.add_argument("file")
    add_push_flags(p)
    p.set_defaults(request=request_bundle_push)
    p = add("list", "list bundles", bundle)
    p.set_defaults(request=lambda a: ("bundles.list", {}))
    p = add("versions", "list a bundle's versions, newest first", bundle)
    p.add_argument("name")
    p.set_defaults(request=lambda a: ("bundles.versions", {"name": a.name}))
    p = add("show", "show a bundle version's spec (NAME or NAME@VERSION)", bundle)
    p.add_argument("ref")
    p.set_defaults(request=request_bundle_show)
    printers["bundles.list"] = lambda r, o, wide=False: table(
        r["items"], ["name", "latest", "versions"], o, wide=wide
    )
    printers["bundles.versions"] = lambda r, o, wide=False: table(
        r["items"], ["version", "content_hash", "created_at", "description"], o, wide=wide
    )
    printers["bundles.get"] = lambda r, o, wide=False: structured(r, "yaml", o)
    return bundle


def add_assign_commands(add: Add, printers: dict[str, Callable[..., None]]) -> None:
    """Add ``assign``, ``unassign`` and ``assignments`` with ``add`` (tui.cli's helper)."""
    p = add("assign", "assign a bundle version to device:ID, group:NAME or tag:NAME")
    p.add_argument("target")
    p.add_argument("bundle", help="NAME@VERSION")
    p.add_argument(
        "--force",
        action="store_true",
        help="assign a version the fleet's devices would refuse (unsigned; docs/security.md)",
    )
    p.set_defaults(
        request=lambda a: (
            "assign",
            {"target": a.target, "bundle": a.bundle, **({"force": True} if a.force else {})},
        )
    )
    p = add("unassign", "remove the assignment of a target")
    p.add_argument("target")
    p.set_defaults(request=lambda a: ("unassign", {"target": a.target}))
    p = add("assignments", "list assignments")
    p.set_defaults(request=lambda a: ("assignments.list", {}))
    printers["assignments.list"] = lambda r, o, wide=False: table(
        r["items"], ["target", "bundle", "version", "created_at"], o, wide=wide
    )


def _load_bundle(path: str) -> Any:
    # Imported here: `bundles` pulls in YAML parsing, which most verbs never need.
    from bundles.validate import load_file

    return load_file(path)


def cmd_bundle_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from bundles.errors import BundleError, BundleInvalid

    try:
        spec = _load_bundle(args.file)
    except BundleInvalid as exc:
        if output_format(args) == "json":
            print(
                json.dumps({"valid": False, "errors": [e.to_dict() for e in exc.errors]}), file=out
            )
        else:
            for e in exc.errors:
                line = f"{args.file}:{e.line}: " if e.line is not None else f"{args.file}: "
                print(f"{line}{e.path}: {e.message}", file=err)
            print(f"{len(exc.errors)} error(s) in {args.file}", file=err)
        return EXIT_USAGE  # bad input exits 2 in every CLI (docs/cli.md)
    except (BundleError, OSError) as exc:
        print(f"error: {args.file}: {exc}", file=err)
        return EXIT_USAGE
    from bundles.hashing import content_hash

    result = {
        "valid": True,
        "bundle": spec.bundle,
        "version": spec.version,
        "content_hash": content_hash(spec),
    }
    if output_format(args) == "json":
        print(json.dumps(result), file=out)
    else:
        print(f"{args.file}: {spec.ref} is valid ({result['content_hash']})", file=out)
    return 0


def request_bundle_push(args: argparse.Namespace) -> Request:
    return signing_request_bundle_push(args)  # a plain, signed, or --sign push


def request_bundle_show(args: argparse.Namespace) -> Request:
    name, _, version = args.ref.partition("@")
    return "bundles.get", request_body(name=name, version=version or None)
