"""A container of a bundle: its table (image, command, env, ports, volumes, restart,
network, resources, labels, and the ``healthcheck`` and ``depends_on`` sections), and the
bundle-wide checks over containers: unique names, no host port published twice."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from bundles.checks.base import BAD, MAX_CONTAINERS, Ctx, Field, check_fields, object_of, short
from bundles.checks.depends import depends_on
from bundles.checks.healthcheck import healthcheck
from bundles.checks.values import (
    PORT,
    abs_path,
    argv,
    boolean,
    choice,
    cpus,
    dns_label,
    env_key,
    label_key,
    list_of,
    memory,
    string,
    string_map,
)
from bundles.image import parse_image_ref
from bundles.model import ContainerSpec, PortMapping, Resources, VolumeMount
from bundles.source import PathParts, format_path
from bundles.variables import check_value

MAX_PORTS = 64
MAX_VOLUMES = 64
MAX_ENV = 512
MAX_LABELS = 128
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{1,254}")


def _image(value: Any, path: PathParts, ctx: Ctx) -> Any:
    if string(value, path, ctx, 512) is BAD:
        return BAD
    try:
        ref = parse_image_ref(value)
    except ValueError as exc:
        ctx.add(path, f"{short(value)} is not a valid image reference: {exc}")
        return BAD
    if not ref.pinned and not ctx.allow_latest:
        what = "uses the 'latest' tag" if ref.tag == "latest" else "has no tag"
        ctx.add(
            path,
            f"{short(value)} {what}; pin a version tag or a digest so every device runs "
            "the same image",
        )
        return BAD
    return value


def _ip(value: Any, path: PathParts, ctx: Ctx) -> Any:
    if string(value, path, ctx, 64) is BAD:
        return BAD
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        ctx.add(path, f"{short(value)} is not an IP address")
        return BAD


PORT_FIELDS: dict[str, Field] = {
    "container": Field(PORT, required=True),
    "host": Field(PORT),
    "protocol": Field(choice("tcp", "udp")),
    "host_ip": Field(_ip),
}


def _port(value: Any, path: PathParts, ctx: Ctx) -> Any:
    before = ctx.total
    out = check_fields(value, path, ctx, PORT_FIELDS)
    if ctx.total > before:
        return BAD
    port = PortMapping(**out)
    if port.host is not None:
        ctx.bindings.append((path, port))
    return port


VOLUME_FIELDS: dict[str, Field] = {
    "source": Field(string, required=True),
    "target": Field(abs_path, required=True),
    "type": Field(choice("volume", "bind")),
    "read_only": Field(boolean),
}


def _volume(value: Any, path: PathParts, ctx: Ctx) -> Any:
    before = ctx.total
    out = check_fields(value, path, ctx, VOLUME_FIELDS)
    if ctx.total > before:
        return BAD
    source_path = (*path, "source")
    source = out["source"]
    if out.get("type", "volume") == "bind":
        abs_path(source, source_path, ctx)
    elif source.startswith("/"):
        ctx.add(source_path, "is a host path; set type: bind for a bind mount")
    elif not _VOLUME_NAME.fullmatch(source):
        ctx.add(
            source_path,
            f"{short(source)} is not a valid volume name (2-255 letters, digits, '_', '.', '-', "
            "starting with a letter or digit)",
        )
    if out["target"] == "/":
        ctx.add((*path, "target"), "must not be / (the container's root)")
    return BAD if ctx.total > before else VolumeMount(**out)


RESOURCES_FIELDS: dict[str, Field] = {
    "memory": Field(memory),
    "cpus": Field(cpus),
}


CONTAINER_FIELDS: dict[str, Field] = {
    "name": Field(dns_label, required=True),
    "image": Field(_image, required=True),
    "command": Field(argv(allow_empty=False)),
    "args": Field(argv(allow_empty=False)),
    # Env values may refer to per-device variables and secrets (bundles.variables).
    "env": Field(string_map(env_key, MAX_ENV, check_value)),
    "ports": Field(list_of(_port, MAX_PORTS)),
    "volumes": Field(list_of(_volume, MAX_VOLUMES)),
    "restart": Field(choice("no", "always", "on-failure", "unless-stopped")),
    "network_mode": Field(choice("bridge", "host", "none")),
    "healthcheck": Field(healthcheck),
    "resources": Field(object_of(RESOURCES_FIELDS, Resources)),
    "labels": Field(string_map(label_key, MAX_LABELS)),
    "depends_on": Field(depends_on),
}


def container(value: Any, path: PathParts, ctx: Ctx) -> Any:
    before = ctx.total
    out = check_fields(value, path, ctx, CONTAINER_FIELDS)
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


def check_names(containers: Any, ctx: Ctx) -> None:
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


def _clashes(a: PortMapping, b: PortMapping) -> bool:
    if a.host != b.host or a.protocol != b.protocol:
        return False
    # A wildcard address binds every address, so it clashes with any specific one.
    wildcard = ("0.0.0.0", "::")
    return a.host_ip == b.host_ip or a.host_ip in wildcard or b.host_ip in wildcard


def check_bindings(ctx: Ctx) -> None:
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
