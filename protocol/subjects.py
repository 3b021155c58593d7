"""NATS subject names. Every subject any SignalBeam process uses is built here."""

from __future__ import annotations

import re

# Device ids end up in NATS subjects, KV keys and SQLite rows; keep them to a safe alphabet.
DEVICE_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

API_PREFIX = "sb.api"
FLEET_CHANGES_PREFIX = "sb.fleet.changes"
ENROLL = "sb.hub.enroll"
REPORT_STREAM = "SB_REPORTS"
DESIRED_BUCKET = "desired"
JS_DOMAIN = "hub"


def valid_device_id(device_id: str) -> bool:
    return bool(DEVICE_ID_RE.match(device_id))


def api(verb: str) -> str:
    """Operator API verb, e.g. ``api("devices.list")`` -> ``sb.api.devices.list``."""
    return f"{API_PREFIX}.{verb}"


def fleet_change(kind: str) -> str:
    return f"{FLEET_CHANGES_PREFIX}.{kind}"


def device_prefix(device_id: str) -> str:
    return f"sb.dev.{device_id}"


def report(device_id: str) -> str:
    return f"sb.dev.{device_id}.report"


def heartbeat(device_id: str) -> str:
    return f"sb.dev.{device_id}.heartbeat"


def rpc(device_id: str, verb: str) -> str:
    return f"sb.dev.{device_id}.rpc.{verb}"


REPORT_WILDCARD = "sb.dev.*.report"
HEARTBEAT_WILDCARD = "sb.dev.*.heartbeat"


def device_from_subject(subject: str) -> str | None:
    parts = subject.split(".")
    if len(parts) >= 3 and parts[0] == "sb" and parts[1] == "dev":
        return parts[2]
    return None
