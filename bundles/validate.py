"""Validate a bundle document into a ``BundleSpec``, reporting every error at once.

A small table-driven validator instead of pydantic or jsonschema: the device agent imports
this module and has a ~40 MB RSS budget, and the tables give exact field paths and messages.
Each object is a table of field -> (checker, required); a checker returns the parsed value or
``BAD`` after recording errors, so one pass collects everything wrong with a document.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from os import PathLike
from typing import Any, NamedTuple

from bundles.errors import BundleError, BundleInvalid, FieldError
from bundles.image import parse_image_ref
from bundles.model import (
    BundleSpec,
    ContainerSpec,
    Dependency,
    HealthCheck,
    PortMapping,
    Resources,
    UpdatePolicy,
    VolumeMount,
)
from bundles.source import (
    MAX_BUNDLE_BYTES,
    LineLookup,
    PathParts,
    decode,
    format_path,
    read_document,
)
from bundles.units import parse_memory
from bundles.variables import check_document, check_value
from bundles.versions import version_error
from bundles.windows import MAX_WINDOWS, WindowError, parse_window
from sbutil.duration import parse_duration

__all__ = ["MAX_BUNDLE_BYTES", "from_dict", "load_file", "parse_bundle"]

MAX_ERRORS = 200
MAX_CONTAINERS = 32
MAX_PORTS = 64
MAX_VOLUMES = 64
MAX_ENV = 512
MAX_LABELS = 128
MAX_ARGV = 256
MAX_DESCRIPTION = 1000
MAX_STRING = 32 * 1024
MAX_PATH = 4096
MAX_DURATION = 86400.0  # one day: anything longer is a typo, not a policy
MIN_MEMORY = 6 * 1024 * 1024  # Docker refuses a memory limit below 6 MiB
MAX_MEMORY = 2**50
MAX_CPUS = 1024.0
MAX_RETRIES = 100

_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
_LABEL_KEY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?")
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{1,254}")
RESERVED_LABEL_PREFIX = "io.signalbeam."


class _Bad:
    def __repr__(self) -> str:
        return "BAD"


BAD: Any = _Bad()


class _Ctx:
    def __init__(self, allow_latest: bool) -> None:
        self.allow_latest = allow_latest
        self.errors: list[tuple[PathParts, str]] = []
        self.total = 0
        self.first_dropped: PathParts = ()  # where the "more errors" entry points
        # Host port bindings seen so far, for the bundle-wide clash check.
        self.bindings: list[tuple[PathParts, PortMapping]] = []
        # depends_on entries seen so far (entry path, service named), for the bundle-wide
        # checks: unknown services, a container depending on itself, cycles.
        self.depends: list[tuple[PathParts, str]] = []

    def add(self, path: PathParts, message: str) -> None:
        self.total += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append((path, message))
        elif self.total == MAX_ERRORS + 1:
            self.first_dropped = path


Check = Callable[[Any, PathParts, _Ctx], Any]


class Field(NamedTuple):
    check: Check
    required: bool = False


# ---------------------------------------------------------------- primitive checkers


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _short(value: Any) -> str:
    """The offending value as the operator wrote it (JSON spelling: false, null, "x"), short.

    Only scalars are rendered: a container value may be a YAML alias bomb, whose rendering
    would never finish.
    """
    if isinstance(value, str):
        text = json.dumps(value[:80], ensure_ascii=False)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        text = "a very large integer"
    elif value is None or isinstance(value, bool | int | float):
        text = json.dumps(value)  # NaN and Infinity print as such
    else:
        text = _kind(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(value: Any, path: PathParts, ctx: _Ctx, max_len: int = MAX_STRING) -> Any:
    if not isinstance(value, str):
        ctx.add(path, f"must be a string, got {_kind(value)}")
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


def _integer(lo: int, hi: int) -> Check:
    def check(value: Any, path: PathParts, ctx: _Ctx) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            ctx.add(path, f"must be an integer {lo}-{hi}, got {_kind(value)}")
            return BAD
        if not lo <= value <= hi:
            ctx.add(path, f"must be {lo}-{hi}")
            return BAD
        return value

    return check


def _boolean(value: Any, path: PathParts, ctx: _Ctx) -> Any:
    if not isinstance(value, bool):
        ctx.add(path, f"must be true or false, got {_kind(value)}")
        return BAD
    return value


def _choice(*choices: str) -> Check:
    listed = ", ".join(choices)

    def check(value: Any, path: PathParts, ctx: _Ctx) -> Any:
        if isinstance(value, str) and value in choices:
            return value
        hint = ""
        if isinstance(value, bool) and "no" in choices:
            hint = ' (YAML reads a bare no as false: write "no" in quotes)'
        ctx.add(path, f"must be one of {listed}; got {_short(value)}{hint}")
        return BAD

    return check


def _duration(*, positive: bool) -> Check:
    def check(value: Any, path: PathParts, ctx: _Ctx) -> Any:
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


def _memory(value: Any, path: PathParts, ctx: _Ctx) -> Any:
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


def _cpus(value: Any, path: PathParts, ctx: _Ctx) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool):
        ctx.add(path, f"must be a positive number of CPUs, got {_kind(value)}")
        return BAD
    if not 0 < value <= MAX_CPUS or not math.isfinite(value):
        ctx.add(path, f"must be greater than 0 and at most {MAX_CPUS:g}")
        return BAD
    return float(value)


def _pattern(regex: re.Pattern[str], rule: str, max_len: int = 255) -> Check:
    def check(value: Any, path: PathParts, ctx: _Ctx) -> Any:
        if _text(value, path, ctx, max_len) is BAD:
            return BAD
        if not regex.fullmatch(value):
            ctx.add(path, f"{_short(value)} {rule}")
            return BAD
        return value

    return check


_dns_label = _pattern(
    _DNS_LABEL,
    "must be a DNS label: 1-63 lower-case letters, digits or '-', "
    "starting and ending with a letter or digit",
    63,
)


def _abs_path(value: Any, path: PathParts, ctx: _Ctx) -> Any:
    if _text(value, path, ctx, MAX_PATH) is BAD:
        return BAD
    if not value.startswith("/"):
        ctx.add(path, f"{_short(value)} must be an absolute path (starting with /)")
        return BAD
    if ".." in value.split("/"):
        ctx.add(path, "must not contain '..'")
        return BAD
    return value


def _argv(*, allow_empty: bool) -> Check:
    def check(value: Any, path: PathParts, ctx: _Ctx) -> Any:
        if isinstance(value, str):
            ctx.add(
                path,
                "must be a list of strings, not one string (no shell splitting is done: "
                'write ["sh", "-c", "..."] to use a shell)',
            )
            return BAD
        if not isinstance(value, list):
            ctx.add(path, f"must be a list of strings, got {_kind(value)}")
            return BAD
        if not value and not allow_empty:
            ctx.add(path, "must not be empty (omit it to keep the image's default)")
            return BAD
        if len(value) > MAX_ARGV:
            ctx.add(path, f"must have at most {MAX_ARGV} items")
            return BAD
        items = [_text(v, (*path, i), ctx) for i, v in enumerate(value)]
        return BAD if BAD in items else tuple(items)

    return check


def _list(item: Check, max_items: int, *, min_items: int = 0) -> Check:
    def check(value: Any, path: PathParts, ctx: _Ctx) -> Any:
        if not isinstance(value, list):
            ctx.add(path, f"must be a list, got {_kind(value)}")
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


def _string_map(
    key_check: Callable[[str], str | None],
    max_items: int,
    value_check: Callable[[str], str | None] | None = None,
) -> Check:
    """A mapping of string -> string, returned sorted by key as the model wants."""

    def check(value: Any, path: PathParts, ctx: _Ctx) -> Any:
        if not isinstance(value, dict):
            ctx.add(path, f"must be a mapping of names to strings, got {_kind(value)}")
            return BAD
        if len(value) > max_items:
            ctx.add(path, f"must have at most {max_items} entries")
            return BAD
        before = ctx.total
        out: dict[str, str] = {}
        for key, val in value.items():
            if not isinstance(key, str):
                ctx.add(path, f"key {_short(key)} must be a string")
                continue
            if (reason := key_check(key)) is not None:
                ctx.add((*path, key), reason)
                continue
            if isinstance(val, bool | int | float):
                # Never coerce: YAML turns 1.10 into 1.1, 0755 into 493 and yes into true.
                ctx.add(
                    (*path, key),
                    f"must be a string, got {_kind(val)}; quote it in YAML "
                    f'(e.g. "{_yaml_hint(val)}") so it is not read as a number or boolean',
                )
                continue
            if _text(val, (*path, key), ctx) is BAD:
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


def _env_key(key: str) -> str | None:
    if not _ENV_NAME.fullmatch(key):
        return (
            "is not a valid environment variable name "
            "(letters, digits and '_', not starting with a digit)"
        )
    return None


def _label_key(key: str) -> str | None:
    if not _LABEL_KEY.fullmatch(key):
        return (
            "is not a valid label key (1-128 letters, digits, '.', '_', '/', '-', "
            "starting and ending with a letter or digit)"
        )
    if key.lower().startswith(RESERVED_LABEL_PREFIX):
        return f"label keys starting with {RESERVED_LABEL_PREFIX} are reserved for the agent"
    return None


# ---------------------------------------------------------------- objects


def _fields(value: Any, path: PathParts, ctx: _Ctx, table: Mapping[str, Field]) -> Any:
    """Check a mapping against a field table; unknown keys are errors; null means omitted."""
    if not isinstance(value, dict):
        ctx.add(path, f"must be a mapping, got {_kind(value)}")
        return BAD
    for key in value:
        if not isinstance(key, str):
            ctx.add(path, f"key {_short(key)} must be a string")
        elif key not in table:
            import difflib  # only on this error path: the agent never needs it otherwise

            close = difflib.get_close_matches(key, table, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(table)
            ctx.add((*path, key), f"unknown field; {hint}")
    out: dict[str, Any] = {}
    for name, spec in table.items():
        raw = value.get(name)
        if raw is None:
            if spec.required:
                ctx.add((*path, name), "is required")
            continue
        out[name] = spec.check(raw, (*path, name), ctx)
    return out


def _image(value: Any, path: PathParts, ctx: _Ctx) -> Any:
    if _text(value, path, ctx, 512) is BAD:
        return BAD
    try:
        ref = parse_image_ref(value)
    except ValueError as exc:
        ctx.add(path, f"{_short(value)} is not a valid image reference: {exc}")
        return BAD
    if not ref.pinned and not ctx.allow_latest:
        what = "uses the 'latest' tag" if ref.tag == "latest" else "has no tag"
        ctx.add(
            path,
            f"{_short(value)} {what}; pin a version tag or a digest so every device runs "
            "the same image",
        )
        return BAD
    return value


def _ip(value: Any, path: PathParts, ctx: _Ctx) -> Any:
    if _text(value, path, ctx, 64) is BAD:
        return BAD
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        ctx.add(path, f"{_short(value)} is not an IP address")
        return BAD


_PORT = _integer(1, 65535)

PORT_FIELDS: dict[str, Field] = {
    "container": Field(_PORT, required=True),
    "host": Field(_PORT),
    "protocol": Field(_choice("tcp", "udp")),
    "host_ip": Field(_ip),
}


def _port(value: Any, path: PathParts, ctx: _Ctx) -> Any:
    before = ctx.total
    out = _fields(value, path, ctx, PORT_FIELDS)
    if ctx.total > before:
        return BAD
    port = PortMapping(**out)
    if port.host is not None:
        ctx.bindings.append((path, port))
    return port


VOLUME_FIELDS: dict[str, Field] = {
    "source": Field(_text, required=True),
    "target": Field(_abs_path, required=True),
    "type": Field(_choice("volume", "bind")),
    "read_only": Field(_boolean),
}


def _volume(value: Any, path: PathParts, ctx: _Ctx) -> Any:
    before = ctx.total
    out = _fields(value, path, ctx, VOLUME_FIELDS)
    if ctx.total > before:
        return BAD
    source_path = (*path, "source")
    source = out["source"]
    if out.get("type", "volume") == "bind":
        _abs_path(source, source_path, ctx)
    elif source.startswith("/"):
        ctx.add(source_path, "is a host path; set type: bind for a bind mount")
    elif not _VOLUME_NAME.fullmatch(source):
        ctx.add(
            source_path,
            f"{_short(source)} is not a valid volume name (2-255 letters, digits, '_', '.', '-', "
            "starting with a letter or digit)",
        )
    if out["target"] == "/":
        ctx.add((*path, "target"), "must not be / (the container's root)")
    return BAD if ctx.total > before else VolumeMount(**out)


HEALTHCHECK_FIELDS: dict[str, Field] = {
    "type": Field(_choice("http", "tcp", "exec"), required=True),
    "port": Field(_PORT),
    "path": Field(_text),
    "command": Field(_argv(allow_empty=True)),
    "interval": Field(_duration(positive=True)),
    "timeout": Field(_duration(positive=True)),
    "retries": Field(_integer(1, MAX_RETRIES)),
    "start_period": Field(_duration(positive=False)),
}


def _healthcheck(value: Any, path: PathParts, ctx: _Ctx) -> Any:
    before = ctx.total
    out = _fields(value, path, ctx, HEALTHCHECK_FIELDS)
    if out is BAD:
        return BAD
    kind = out.get("type")
    # Fields that do not apply to the probe type may appear only with their default value, so
    # that BundleSpec.to_dict() output (which writes every field) validates again.
    if kind in ("http", "tcp") and value.get("port") is None:
        ctx.add((*path, "port"), f"is required for {kind} probes")
    if kind == "exec" and out.get("port") is not None:
        ctx.add((*path, "port"), "applies only to http and tcp probes")
    if kind == "exec" and out.get("command") in (None, ()):
        ctx.add((*path, "command"), "is required (a non-empty list) for an exec probe")
    if kind in ("http", "tcp") and out.get("command") not in (None, (), BAD):
        ctx.add((*path, "command"), "applies only to exec probes")
    probe_path = out.get("path")
    if isinstance(probe_path, str):
        if kind == "http" and not probe_path.startswith("/"):
            ctx.add((*path, "path"), "must start with /")
        elif kind in ("tcp", "exec") and probe_path != "/":
            ctx.add((*path, "path"), "applies only to http probes")
    return BAD if ctx.total > before else HealthCheck(**out)


RESOURCES_FIELDS: dict[str, Field] = {
    "memory": Field(_memory),
    "cpus": Field(_cpus),
}


def _object(table: Mapping[str, Field], build: Callable[..., Any]) -> Check:
    def check(value: Any, path: PathParts, ctx: _Ctx) -> Any:
        before = ctx.total
        out = _fields(value, path, ctx, table)
        return BAD if ctx.total > before else build(**out)

    return check


def _window(value: Any, path: PathParts, ctx: _Ctx) -> Any:
    """One maintenance window (``bundles.windows`` grammar), kept as written."""
    if not isinstance(value, str):
        ctx.add(path, f"must be a string like 'Sat,Sun 02:00-05:00', got {_kind(value)}")
        return BAD
    try:
        w = parse_window(value)
    except WindowError as exc:
        ctx.add(path, f"{exc.field}: {exc.message} (in {_short(value)})")
        return BAD
    return w.text


UPDATE_FIELDS: dict[str, Field] = {
    "strategy": Field(_choice("download-then-kill", "kill-then-download")),
    "health_window": Field(_duration(positive=True)),
    "maintenance_windows": Field(_list(_window, MAX_WINDOWS)),
}

CONDITIONS = ("service_started", "service_healthy")
DEPENDENCY_FIELDS: dict[str, Field] = {
    "condition": Field(_choice(*CONDITIONS)),
}


def _depends_on(value: Any, path: PathParts, ctx: _Ctx) -> Any:
    """Compose's two spellings: a list of names (each ``service_started``) or a mapping of
    name -> ``{condition: ...}``. Returned sorted by service, as the model wants."""
    before = ctx.total
    entries: list[tuple[PathParts, Any, Any]] = []  # (path, name, condition)
    if isinstance(value, list):
        entries = [((*path, i), name, "service_started") for i, name in enumerate(value)]
    elif isinstance(value, dict):
        for name, body in value.items():
            if not isinstance(name, str):
                ctx.add(path, f"key {_short(name)} must be a string")
                continue
            cond = _fields(body, (*path, name), ctx, DEPENDENCY_FIELDS)
            if cond is not BAD:
                entries.append(((*path, name), name, cond.get("condition", "service_started")))
    else:
        ctx.add(
            path,
            f"must be a list of service names or a mapping of names to {{condition: ...}}, "
            f"got {_kind(value)}",
        )
        return BAD
    if len(value) > MAX_CONTAINERS:
        ctx.add(path, f"must have at most {MAX_CONTAINERS} entries")
        return BAD
    out: dict[str, Dependency] = {}
    for entry_path, name, condition in entries:
        if _dns_label(name, entry_path, ctx) is BAD or condition is BAD:
            continue
        if name in out:
            ctx.add(entry_path, f"{name!r} is listed twice")
            continue
        out[name] = Dependency(name, condition)
        ctx.depends.append((entry_path, name))
    if ctx.total > before:
        return BAD
    return tuple(out[name] for name in sorted(out))


CONTAINER_FIELDS: dict[str, Field] = {
    "name": Field(_dns_label, required=True),
    "image": Field(_image, required=True),
    "command": Field(_argv(allow_empty=False)),
    "args": Field(_argv(allow_empty=False)),
    # Env values may refer to per-device variables and secrets (bundles.variables).
    "env": Field(_string_map(_env_key, MAX_ENV, check_value)),
    "ports": Field(_list(_port, MAX_PORTS)),
    "volumes": Field(_list(_volume, MAX_VOLUMES)),
    "restart": Field(_choice("no", "always", "on-failure", "unless-stopped")),
    "network_mode": Field(_choice("bridge", "host", "none")),
    "healthcheck": Field(_healthcheck),
    "resources": Field(_object(RESOURCES_FIELDS, Resources)),
    "labels": Field(_string_map(_label_key, MAX_LABELS)),
    "depends_on": Field(_depends_on),
}


def _container(value: Any, path: PathParts, ctx: _Ctx) -> Any:
    before = ctx.total
    out = _fields(value, path, ctx, CONTAINER_FIELDS)
    if out is BAD:
        return BAD
    mode = out.get("network_mode")
    if mode in ("host", "none") and value.get("ports"):
        reason = (
            "the container already uses the host's ports" if mode == "host" else "it has no network"
        )
        ctx.add((*path, "ports"), f"cannot publish ports with network_mode {mode}: {reason}")
    volumes = out.get("volumes")
    if isinstance(volumes, tuple):
        seen: dict[str, int] = {}
        for i, vol in enumerate(volumes):
            if vol.target in seen:
                ctx.add(
                    (*path, "volumes", i, "target"),
                    f"{vol.target} is already mounted by volumes[{seen[vol.target]}]",
                )
            seen.setdefault(vol.target, i)
    return BAD if ctx.total > before else ContainerSpec(**out)


def _version(value: Any, path: PathParts, ctx: _Ctx) -> Any:
    reason = version_error(value)
    if reason is not None:
        ctx.add(path, reason if not isinstance(value, str) else f"{_short(value)} {reason}")
        return BAD
    return value


def _description(value: Any, path: PathParts, ctx: _Ctx) -> Any:
    return _text(value, path, ctx, MAX_DESCRIPTION)


BUNDLE_FIELDS: dict[str, Field] = {
    "bundle": Field(_dns_label, required=True),
    "version": Field(_version, required=True),
    "description": Field(_description),
    "containers": Field(_list(_container, MAX_CONTAINERS, min_items=1), required=True),
    "update": Field(_object(UPDATE_FIELDS, UpdatePolicy)),
}


def _check_names(containers: Any, ctx: _Ctx) -> None:
    if not isinstance(containers, list):
        return
    first: dict[str, int] = {}
    for i, item in enumerate(containers[:MAX_CONTAINERS]):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            ctx.add(
                ("containers", i, "name"),
                f"duplicate container name {name!r} (also containers[{first[name]}])",
            )
        first.setdefault(name, i)


def _check_depends(containers: Any, ctx: _Ctx) -> None:
    """Every dependency names another container of this bundle, and none is a cycle."""
    if not isinstance(containers, list):
        return
    names = {
        item["name"]: i
        for i, item in enumerate(containers[:MAX_CONTAINERS])
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    }
    edges: dict[str, list[tuple[str, PathParts]]] = {}
    for path, dep in ctx.depends:
        index = path[1]
        item = containers[index] if isinstance(index, int) else None
        owner = item.get("name") if isinstance(item, dict) else None
        if not isinstance(owner, str):
            continue
        if dep == owner:
            ctx.add(path, f"container {owner!r} cannot depend on itself")
        elif dep not in names:
            known = ", ".join(sorted(n for n in names if n != owner)) or "none"
            ctx.add(path, f"unknown service {dep!r}; this bundle's other containers: {known}")
        else:
            edges.setdefault(owner, []).append((dep, path))
    # Depth-first search; a back edge closes a cycle, reported once at the entry that closes it.
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep, path in edges.get(node, []):
            if state.get(dep) == 1:
                # Read from the container whose entry closes the cycle: a -> b -> a.
                cycle = [node, *stack[stack.index(dep) : -1], node]
                ctx.add(path, "dependency cycle: " + " -> ".join(cycle))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):  # at most MAX_CONTAINERS deep: recursion is safe
        if node not in state:
            visit(node)


def _clashes(a: PortMapping, b: PortMapping) -> bool:
    if a.host != b.host or a.protocol != b.protocol:
        return False
    # A wildcard address binds every address, so it clashes with any specific one.
    wildcard = ("0.0.0.0", "::")
    return a.host_ip == b.host_ip or a.host_ip in wildcard or b.host_ip in wildcard


def _check_bindings(ctx: _Ctx) -> None:
    by_port: dict[tuple[int | None, str], list[tuple[PathParts, PortMapping]]] = {}
    for path, port in ctx.bindings:
        earlier = by_port.setdefault((port.host, port.protocol), [])
        for other_path, other in earlier:
            if _clashes(port, other):
                ctx.add(
                    (*path, "host"),
                    f"host port {port.host}/{port.protocol} on {port.host_ip} is already "
                    f"published by {format_path(other_path)}",
                )
                break
        earlier.append((path, port))


def _validate(doc: Any, allow_latest: bool) -> tuple[BundleSpec | None, _Ctx]:
    ctx = _Ctx(allow_latest)
    if doc is None:
        ctx.add((), "is empty; a bundle needs at least bundle, version and containers")
        return None, ctx
    out = _fields(doc, (), ctx, BUNDLE_FIELDS)
    if out is BAD:
        return None, ctx
    _check_names(doc.get("containers"), ctx)
    _check_depends(doc.get("containers"), ctx)
    _check_bindings(ctx)
    for path, message in check_document(doc):
        ctx.add(path, message)
    if ctx.total:
        return None, ctx
    return BundleSpec(**out), ctx


def _raise(ctx: _Ctx, source: str, lines: LineLookup | None) -> BundleInvalid:
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
