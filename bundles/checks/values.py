"""Scalar and list rules of the bundle validator: strings, integers, choices, durations,
memory and CPU sizes, names, paths, argv lists, string maps (env, labels)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from bundles.checks.base import BAD, Check, Ctx, kind_of, short
from bundles.source import PathParts
from bundles.units import parse_memory
from sbutil.duration import parse_duration

MAX_ARGV = 256
MAX_STRING = 32 * 1024
MAX_PATH = 4096
MAX_DURATION = 86400.0  # one day: anything longer is a typo, not a policy
MIN_MEMORY = 6 * 1024 * 1024  # Docker refuses a memory limit below 6 MiB
MAX_MEMORY = 2**50
MAX_CPUS = 1024.0

DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
LABEL_KEY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?")
RESERVED_LABEL_PREFIX = "io.signalbeam."


def string(value: Any, path: PathParts, ctx: Ctx, max_len: int = MAX_STRING) -> Any:
    if not isinstance(value, str):
        ctx.add(path, f"must be a string, got {kind_of(value)}")
        return BAD
    if len(value) > max_len:
        ctx.add(path, f"must be at most {max_len} characters")
        return BAD
    if "\x00" in value:
        ctx.add(path, "must not contain a NUL character")
        return BAD
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # JSON "\ud800" escapes decode to lone surrogates, which no UTF-8 encoder accepts.
            ctx.add(path, "must be valid Unicode text (no unpaired surrogates)")
            return BAD
    return value


def integer(lo: int, hi: int) -> Check:
    def check(value: Any, path: PathParts, ctx: Ctx) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            ctx.add(path, f"must be an integer {lo}-{hi}, got {kind_of(value)}")
            return BAD
        if not lo <= value <= hi:
            ctx.add(path, f"must be {lo}-{hi}")
            return BAD
        return value

    return check


def boolean(value: Any, path: PathParts, ctx: Ctx) -> Any:
    if not isinstance(value, bool):
        ctx.add(path, f"must be true or false, got {kind_of(value)}")
        return BAD
    return value


def choice(*choices: str) -> Check:
    listed = ", ".join(choices)

    def check(value: Any, path: PathParts, ctx: Ctx) -> Any:
        if isinstance(value, str) and value in choices:
            return value
        hint = ""
        if isinstance(value, bool) and "no" in choices:
            hint = ' (YAML reads a bare no as false: write "no" in quotes)'
        ctx.add(path, f"must be one of {listed}; got {short(value)}{hint}")
        return BAD

    return check


def duration(*, positive: bool) -> Check:
    def check(value: Any, path: PathParts, ctx: Ctx) -> Any:
        try:
            seconds = parse_duration(value, allow_zero=True)
        except ValueError as exc:
            ctx.add(path, str(exc))
            return BAD
        if positive and seconds <= 0:
            ctx.add(path, "must be greater than zero")
            return BAD
        if seconds > MAX_DURATION:
            ctx.add(path, "must be at most 24h")
            return BAD
        return seconds

    return check


def memory(value: Any, path: PathParts, ctx: Ctx) -> Any:
    try:
        size = parse_memory(value)
    except ValueError as exc:
        ctx.add(path, str(exc))
        return BAD
    if size < MIN_MEMORY:
        ctx.add(path, "must be at least 6Mi (container engines refuse less)")
        return BAD
    if size > MAX_MEMORY:
        ctx.add(path, "must be at most 1Pi")
        return BAD
    return size


def cpus(value: Any, path: PathParts, ctx: Ctx) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool):
        ctx.add(path, f"must be a positive number of CPUs, got {kind_of(value)}")
        return BAD
    if not 0 < value <= MAX_CPUS or not math.isfinite(value):
        ctx.add(path, f"must be greater than 0 and at most {MAX_CPUS:g}")
        return BAD
    return float(value)


def pattern(regex: re.Pattern[str], rule: str, max_len: int = 255) -> Check:
    def check(value: Any, path: PathParts, ctx: Ctx) -> Any:
        if string(value, path, ctx, max_len) is BAD:
            return BAD
        if not regex.fullmatch(value):
            ctx.add(path, f"{short(value)} {rule}")
            return BAD
        return value

    return check


dns_label = pattern(
    DNS_LABEL,
    "must be a DNS label: 1-63 lower-case letters, digits or '-', "
    "starting and ending with a letter or digit",
    63,
)


def abs_path(value: Any, path: PathParts, ctx: Ctx) -> Any:
    if string(value, path, ctx, MAX_PATH) is BAD:
        return BAD
    if not value.startswith("/"):
        ctx.add(path, f"{short(value)} must be an absolute path (starting with /)")
        return BAD
    if ".." in value.split("/"):
        ctx.add(path, "must not contain '..'")
        return BAD
    return value


def argv(*, allow_empty: bool) -> Check:
    def check(value: Any, path: PathParts, ctx: Ctx) -> Any:
        if isinstance(value, str):
            ctx.add(
                path,
                "must be a list of strings, not one string (no shell splitting is done: "
                'write ["sh", "-c", "..."] to use a shell)',
            )
            return BAD
        if not isinstance(value, list):
            ctx.add(path, f"must be a list of strings, got {kind_of(value)}")
            return BAD
        if not value and not allow_empty:
            ctx.add(path, "must not be empty (omit it to keep the image's default)")
            return BAD
        if len(value) > MAX_ARGV:
            ctx.add(path, f"must have at most {MAX_ARGV} items")
            return BAD
        items = [string(v, (*path, i), ctx) for i, v in enumerate(value)]
        return BAD if BAD in items else tuple(items)

    return check


def list_of(item: Check, max_items: int, *, min_items: int = 0) -> Check:
    def check(value: Any, path: PathParts, ctx: Ctx) -> Any:
        if not isinstance(value, list):
            ctx.add(path, f"must be a list, got {kind_of(value)}")
            return BAD
        if len(value) < min_items:
            ctx.add(path, f"must have at least {min_items} item{'s' * (min_items > 1)}")
            return BAD
        if len(value) > max_items:
            ctx.add(path, f"must have at most {max_items} items")
            return BAD
        items = [item(v, (*path, i), ctx) for i, v in enumerate(value)]
        return BAD if any(v is BAD for v in items) else tuple(items)

    return check


def string_map(
    key_check: Callable[[str], str | None],
    max_items: int,
    value_check: Callable[[str], str | None] | None = None,
) -> Check:
    """A mapping of string -> string, returned sorted by key as the model wants."""

    def check(value: Any, path: PathParts, ctx: Ctx) -> Any:
        if not isinstance(value, dict):
            ctx.add(path, f"must be a mapping of names to strings, got {kind_of(value)}")
            return BAD
        if len(value) > max_items:
            ctx.add(path, f"must have at most {max_items} entries")
            return BAD
        before = ctx.total
        out: dict[str, str] = {}
        for key, val in value.items():
            if not isinstance(key, str):
                ctx.add(path, f"key {short(key)} must be a string")
                continue
            if (reason := key_check(key)) is not None:
                ctx.add((*path, key), reason)
                continue
            if isinstance(val, bool | int | float):
                # Never coerce: YAML turns 1.10 into 1.1, 0755 into 493 and yes into true.
                ctx.add(
                    (*path, key),
                    f"must be a string, got {kind_of(val)}; quote it in YAML "
                    f'(e.g. "{_yaml_hint(val)}") so it is not read as a number or boolean',
                )
                continue
            if string(val, (*path, key), ctx) is BAD:
                continue
            if value_check is not None and (reason := value_check(val)) is not None:
                ctx.add((*path, key), reason)
                continue
            out[key] = val
        return BAD if ctx.total > before else tuple(sorted(out.items()))

    return check


def _yaml_hint(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def env_key(key: str) -> str | None:
    if not ENV_NAME.fullmatch(key):
        return (
            "is not a valid environment variable name "
            "(letters, digits and '_', not starting with a digit)"
        )
    return None


def label_key(key: str) -> str | None:
    if not LABEL_KEY.fullmatch(key):
        return (
            "is not a valid label key (1-128 letters, digits, '.', '_', '/', '-', "
            "starting and ending with a letter or digit)"
        )
    if key.lower().startswith(RESERVED_LABEL_PREFIX):
        return f"label keys starting with {RESERVED_LABEL_PREFIX} are reserved for the agent"
    return None


PORT = integer(1, 65535)
