"""Validate a bundle document into a ``BundleSpec``, reporting every error at once.

A small table-driven validator instead of pydantic or jsonschema: the device agent imports
this module and has a ~40 MB RSS budget, and the tables give exact field paths and messages.
Each object is a table of field -> (checker, required); a checker returns the parsed value or
``BAD`` after recording errors, so one pass collects everything wrong with a document.

This module holds the top-level table, the bundle-wide checks and the public API; each
section's table and rules are in ``bundles.checks`` (``container``, ``healthcheck``,
``depends``, ``update``, the scalar rules in ``values``, the machinery in ``base``).
"""

from __future__ import annotations

import math
import os
import stat
from os import PathLike
from typing import Any

from bundles.checks.base import BAD, MAX_CONTAINERS, Ctx, Field, check_fields, object_of, short
from bundles.checks.container import check_bindings, check_names, container
from bundles.checks.depends import check_depends
from bundles.checks.update import UPDATE_FIELDS
from bundles.checks.values import dns_label, list_of, string
from bundles.errors import BundleError, BundleInvalid, FieldError
from bundles.model import BundleSpec, UpdatePolicy
from bundles.source import (
    MAX_BUNDLE_BYTES,
    LineLookup,
    PathParts,
    decode,
    format_path,
    read_document,
)
from bundles.variables import check_document
from bundles.versions import version_error

__all__ = ["MAX_BUNDLE_BYTES", "from_dict", "load_file", "parse_bundle"]

MAX_DESCRIPTION = 1000


def _version(value: Any, path: PathParts, ctx: Ctx) -> Any:
    reason = version_error(value)
    if reason is not None:
        ctx.add(path, reason if not isinstance(value, str) else f"{short(value)} {reason}")
        return BAD
    return value


def _description(value: Any, path: PathParts, ctx: Ctx) -> Any:
    return string(value, path, ctx, MAX_DESCRIPTION)


BUNDLE_FIELDS: dict[str, Field] = {
    "bundle": Field(dns_label, required=True),
    "version": Field(_version, required=True),
    "description": Field(_description),
    "containers": Field(list_of(container, MAX_CONTAINERS, min_items=1), required=True),
    "update": Field(object_of(UPDATE_FIELDS, UpdatePolicy)),
}


def _validate(doc: Any, allow_latest: bool) -> tuple[BundleSpec | None, Ctx]:
    ctx = Ctx(allow_latest)
    if doc is None:
        ctx.add((), "is empty; a bundle needs at least bundle, version and containers")
        return None, ctx
    out = check_fields(doc, (), ctx, BUNDLE_FIELDS)
    if out is BAD:
        return None, ctx
    check_names(doc.get("containers"), ctx)
    check_depends(doc.get("containers"), ctx)
    check_bindings(ctx)
    for path, message in check_document(doc):
        ctx.add(path, message)
    if ctx.total:
        return None, ctx
    return BundleSpec(**out), ctx


def _raise(ctx: Ctx, source: str, lines: LineLookup | None) -> BundleInvalid:
    errors = [
        FieldError(format_path(path), message, lines(path) if lines else None)
        for path, message in ctx.errors
    ]
    # Source order reads best; errors without a line keep their (document) order at the end.
    errors.sort(key=lambda e: e.line if e.line is not None else math.inf)
    if ctx.total > len(ctx.errors):
        errors.append(
            FieldError(
                "$",
                f"{ctx.total - len(ctx.errors)} more errors not shown, the first at this line",
                lines(ctx.first_dropped) if lines else None,
            )
        )
    return BundleInvalid(errors, source)


# ---------------------------------------------------------------- public API


def from_dict(doc: Any, *, allow_latest: bool = False, source: str = "<bundle>") -> BundleSpec:
    """Validate an already-parsed document (e.g. ``BundleSpec.to_dict()`` from the hub)."""
    spec, ctx = _validate(doc, allow_latest)
    if spec is None:
        raise _raise(ctx, source, None)
    return spec


def parse_bundle(
    data: str | bytes, *, source: str = "<bundle>", allow_latest: bool = False
) -> BundleSpec:
    """Parse YAML or JSON text and validate it; errors carry source line numbers."""
    text = decode(data, source)
    doc, lines = read_document(text, source)
    spec, ctx = _validate(doc, allow_latest)
    if spec is None:
        raise _raise(ctx, source, lines)
    return spec


def load_file(path: str | PathLike[str], *, allow_latest: bool = False) -> BundleSpec:
    """Read and validate a bundle file; unreadable files raise ``BundleError``."""
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait, forever, for a writer. It changes
        # nothing for the regular file that is then the only thing read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BundleError(f"cannot read bundle file {path}: {exc.strerror or exc}") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise BundleError(f"cannot read bundle file {path}: it is {_file_kind(mode)}")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(MAX_BUNDLE_BYTES + 1)
        except OSError as exc:
            raise BundleError(f"cannot read bundle file {path}: {exc.strerror or exc}") from exc
    return parse_bundle(data, source=str(path), allow_latest=allow_latest)


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return f"{kind}, not a regular file"
    return "not a regular file"
