"""The operator API contract: verb names, the key header, limits, request fields.

Each verb is a NATS request on ``sb.api.<verb>`` (see ``protocol.subjects.api``) with a JSON
object body and a JSON reply: the verb's result object, or the error shape from
``protocol.errors``. ``REQUESTS`` lists every verb's accepted body fields so the hub
validates against it and the CLI and docs can name them; unknown fields are refused.
"""

from __future__ import annotations

import re
from typing import Literal

API_KEY_HEADER = "Sb-Api-Key"
MAX_BODY_BYTES = 1024 * 1024  # 1 MiB; the hub's nats-server allows more so it can say why
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# devices.list with view "summary": ~1 KiB per device, so a full page stays far below the
# 1 MiB NATS payload limit (bench/bench_api.py measures it).
MAX_SUMMARY_LIMIT = 500
VIEWS: tuple[str, ...] = ("summary",)
# devices.list's ``ids`` filter: one summary page's worth, so a client can refresh exactly the
# devices a change notice names in one call.
MAX_LIST_IDS = 500
SERVICE_NAME = "signalbeam-hub"

# Remote commands (devices.logs|restart|reconcile|status): how long the hub waits for the
# device's answer (the body's "timeout"), and a caller for the hub's. A restart stops the
# container first, and the engine lets it handle SIGTERM for RESTART_STOP_TIMEOUT seconds
# before it kills it (a process that ignores SIGTERM takes all of them): a restart's wait
# covers that, the start, and a loaded device, or the caller reports a failure while the
# restart goes on and succeeds.
DEVICE_WAIT = 5
RESTART_STOP_TIMEOUT = 10
RESTART_WAIT = 30
MAX_DEVICE_WAIT = 60
# What a client waits beyond the device wait it asked for: the hub answers (even "did not
# answer") after the device wait, and the answer needs to travel back.
DEVICE_WAIT_MARGIN = 3


def device_wait(verb: str) -> int:
    """The default device wait for a remote command (``restart`` or ``devices.restart``)."""
    return RESTART_WAIT if verb.removeprefix("devices.") == "restart" else DEVICE_WAIT


Role = Literal["admin", "readonly"]
ROLES: tuple[str, ...] = ("admin", "readonly")
TARGET_KINDS: tuple[str, ...] = ("device", "group", "tag")
RESOLUTIONS: tuple[str, ...] = ("1m", "1h")
ROLLOUT_STATES: tuple[str, ...] = ("running", "paused", "succeeded", "failed", "aborted")

# Secrets the API creates: ``<prefix>_<8 hex id>_<32-64 URL-safe random>``. The id names the
# secret in lists and revocations; the hub stores only a hash of the whole string. The
# requester makes the secret and sends it in the request, which only the hub can read: the
# reply goes to the operators' inbox prefix, which every operator's shared NATS login can
# read, so it must carry no secret (issue 19). ``tui.client.HubClient`` does this itself.
KEY_PREFIX = "sbk"
TOKEN_PREFIX = "sbt"
SECRET_VERBS: dict[str, tuple[str, str]] = {  # verb -> (body field, prefix)
    "keys.create": ("key", KEY_PREFIX),
    "tokens.create": ("token", TOKEN_PREFIX),
}
_SECRET_RE = re.compile(r"([a-z]{3})_([0-9a-f]{8})_[A-Za-z0-9_-]{32,64}")


def new_secret(prefix: str) -> str:
    # Imported here: every `signalbeam` verb imports this module (--help too), and secrets
    # loads hashlib and OpenSSL's libcrypto, ~4 MiB that only key and token creation need.
    import secrets

    return f"{prefix}_{secrets.token_hex(4)}_{secrets.token_urlsafe(24)}"


def secret_id(secret: str, prefix: str) -> str | None:
    """The id inside a well-formed secret with this prefix; None for anything else."""
    m = _SECRET_RE.fullmatch(secret)
    return m.group(2) if m is not None and m.group(1) == prefix else None


# verb -> (writes?, {field: (type name, required)}).  Type names: str, int, bool, object, list,
# int|str (either: a count or "2%", seconds or "10m").
FieldDoc = tuple[str, bool]
PAGE: dict[str, FieldDoc] = {"limit": ("int", False), "cursor": ("str", False)}
_SETTING: dict[str, FieldDoc] = {
    "scope": ("str", True),
    "target": ("str", False),
    "name": ("str", True),
}
_SETTING_FILTER: dict[str, FieldDoc] = {"scope": ("str", False), "target": ("str", False)}

REQUESTS: dict[str, tuple[bool, dict[str, FieldDoc]]] = {
    "devices.list": (
        False,
        {
            "tag": ("str", False),
            "group": ("str", False),
            "status": ("str", False),
            "text": ("str", False),
            "include_decommissioned": ("bool", False),
            # "NAME" or "NAME@VERSION": devices whose reported running bundle matches.
            "running": ("str", False),
            "view": ("str", False),  # "summary": items carry the TUI's fleet-table columns
            "ids": ("list", False),  # only these device ids (at most MAX_LIST_IDS)
            **PAGE,
        },
    ),
    "devices.get": (False, {"id": ("str", True)}),
    "devices.tag": (True, {"id": ("str", True), "tag": ("str", True)}),
    "devices.untag": (True, {"id": ("str", True), "tag": ("str", True)}),
    "devices.decommission": (True, {"id": ("str", True)}),
    # Sync (issue 5): re-enrollment approval and remote commands through the device's leaf.
    "devices.approve_reenroll": (True, {"id": ("str", True)}),
    "devices.logs": (
        False,
        {
            "id": ("str", True),
            "container": ("str", True),
            "tail": ("int", False),
            "timeout": ("int", False),
        },
    ),
    "devices.restart": (
        True,
        {"id": ("str", True), "container": ("str", True), "timeout": ("int", False)},
    ),
    "devices.reconcile": (True, {"id": ("str", True), "timeout": ("int", False)}),
    "devices.status": (False, {"id": ("str", True), "timeout": ("int", False)}),
    "groups.create": (True, {"name": ("str", True), "description": ("str", False)}),
    "groups.delete": (True, {"name": ("str", True)}),
    "groups.add": (True, {"name": ("str", True), "device": ("str", True)}),
    "groups.remove": (True, {"name": ("str", True), "device": ("str", True)}),
    "groups.list": (False, {}),
    # Signed bundles (docs/security.md): signatures and trust sets are made by the operator's
    # CLI with a key the hub never sees; the hub checks and relays them.
    "bundles.push": (True, {"spec": ("object", True), "signatures": ("list", False)}),
    "bundles.sign": (
        True,
        {"name": ("str", True), "version": ("str", True), "signature": ("object", True)},
    ),
    "bundles.list": (False, {}),
    "bundles.get": (False, {"name": ("str", True), "version": ("str", False)}),
    "bundles.versions": (False, {"name": ("str", True)}),
    "trust.get": (False, {}),
    "trust.push": (True, {"trust": ("object", True), "force": ("bool", False)}),
    "assign": (
        True,
        {
            "target": ("str", True),
            "bundle": ("str", True),
            "dry_run": ("bool", False),
            "force": ("bool", False),  # send a version devices would refuse (signing)
        },
    ),
    "unassign": (True, {"target": ("str", True)}),
    "assignments.list": (False, {}),
    "events.list": (False, {"device": ("str", False), **PAGE}),
    "metrics.get": (
        False,
        {
            "device": ("str", True),
            "resolution": ("str", False),
            "since": ("int", False),
            "until": ("int", False),
            "name": ("str", False),
        },
    ),
    "tokens.create": (
        True,
        {
            "tenant": ("str", True),
            "expires_in": ("int", False),
            "max_uses": ("int", False),
            "token": ("str", True),  # made by the requester (SECRET_VERBS)
        },
    ),
    "tokens.list": (False, {}),
    "tokens.revoke": (True, {"id": ("str", True)}),
    "keys.create": (
        True,
        {"name": ("str", True), "role": ("str", False), "key": ("str", True)},  # SECRET_VERBS
    ),
    "keys.list": (False, {}),
    "keys.revoke": (True, {"id": ("str", True)}),
    # Update gates (docs/rollouts.md): maintenance windows per device or group, and the
    # override through a device's update locks and windows (confirm = the device count).
    "maintenance.set": (
        True,
        {"target": ("str", True), "windows": ("list", False), "clear": ("bool", False)},
    ),
    "maintenance.list": (False, {}),
    # Metered links (docs/sync.md): a data budget like "100KB/day" per device or group.
    "metered.set": (
        True,
        {"target": ("str", True), "budget": ("str", False), "clear": ("bool", False)},
    ),
    "metered.list": (False, {}),
    "devices.force_update": (True, {"ids": ("list", True), "confirm": ("int", True)}),
    # Variables and secrets per fleet, group or device (docs/bundles.md); scope is fleet,
    # group or device, target the group or device (none for the fleet).
    "vars.set": (True, _SETTING | {"value": ("str", True)}),
    "vars.unset": (True, _SETTING),
    "vars.list": (False, _SETTING_FILTER),
    "secrets.set": (True, _SETTING | {"value": ("str", True)}),
    "secrets.unset": (True, _SETTING),
    "secrets.list": (False, _SETTING_FILTER),
    # Who the caller's key is, so a client can enter read-only mode by itself.
    "session.whoami": (False, {}),
    # Rollouts (docs/rollouts.md): a bundle version to a target, phase by phase.
    "rollouts.start": (
        True,
        {
            "bundle": ("str", True),
            "target": ("str", True),
            "canary_percent": ("int", False),  # the phases P%,100%
            "phases": ("str", False),  # "1%,10%,50%,100%" or counts "5,50,100%"
            "bake": ("int|str", False),  # seconds, or a duration like "10m"
            "max_failures": ("int|str", False),  # a count (2) or a percentage ("2%")
            "dry_run": ("bool", False),
            "force": ("bool", False),  # roll out a version devices would refuse (signing)
        },
    ),
    "rollouts.list": (False, {"state": ("str", False), **PAGE}),
    "rollouts.get": (False, {"id": ("str", True), **PAGE}),  # pages the devices
    "rollouts.pause": (True, {"id": ("str", True)}),
    "rollouts.resume": (True, {"id": ("str", True)}),
    "rollouts.abort": (True, {"id": ("str", True)}),
}

VERBS: tuple[str, ...] = tuple(REQUESTS)


# Writes that take "dry_run": true: they then write nothing, so a read-only key may ask.
DRY_RUN_VERBS: tuple[str, ...] = ("assign", "rollouts.start")


def is_write(verb: str) -> bool:
    return REQUESTS[verb][0]
