"""The ``healthcheck`` section of a container: the probe type and the fields that apply to
it (http, tcp, exec)."""

from __future__ import annotations

from typing import Any

from bundles.checks.base import BAD, Ctx, Field, check_fields
from bundles.checks.values import PORT, argv, choice, duration, integer, string
from bundles.model import HealthCheck
from bundles.source import PathParts

MAX_RETRIES = 100


HEALTHCHECK_FIELDS: dict[str, Field] = {
    "type": Field(choice("http", "tcp", "exec"), required=True),
    "port": Field(PORT),
    "path": Field(string),
    "command": Field(argv(allow_empty=True)),
    "interval": Field(duration(positive=True)),
    "timeout": Field(duration(positive=True)),
    "retries": Field(integer(1, MAX_RETRIES)),
    "start_period": Field(duration(positive=False)),
}


def healthcheck(value: Any, path: PathParts, ctx: Ctx) -> Any:
    before = ctx.total
    out = check_fields(value, path, ctx, HEALTHCHECK_FIELDS)
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
