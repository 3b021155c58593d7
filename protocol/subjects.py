"""NATS subject names. Every subject any SignalBeam process uses is built here: its own
(``sb.…``, the reply inboxes) and the nats-server/JetStream ones it names (``$KV.…`` for the
desired bucket, ``$JS…DIRECT.GET`` in a device's permissions). tests/unit/test_subjects_home.py
checks that no other module spells one."""

from __future__ import annotations

import re

# Device ids end up in NATS subjects, KV keys and SQLite rows; keep them to a safe alphabet.
# Always ``fullmatch``: with ``match``, ``$`` also matches before a trailing newline, and
# "cr-b\n" once got enrolled and broke every later nats-server config reload.
DEVICE_ID_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# A NATS subject token as nats-server's config accepts it: no dot, no whitespace, no control
# character (what protocol.subjects builds from ids never needs more than this).
_TOKEN_RE = re.compile(r"[^\x00-\x20\x7f.]+")

API_PREFIX = "sb.api"
FLEET_CHANGES_PREFIX = "sb.fleet.changes"
ENROLL = "sb.hub.enroll"
# The renewal of a device's expired JWT through the bootstrap login (its own link refuses an
# expired JWT): ``sb.hub.renew.challenge`` then ``sb.hub.renew.jwt`` (docs/security.md).
RENEW_PREFIX = "sb.hub.renew"
RENEW_CHALLENGE = f"{RENEW_PREFIX}.challenge"
RENEW_JWT = f"{RENEW_PREFIX}.jwt"
RENEW_ALL = f"{RENEW_PREFIX}.>"


def account_claims_update(account: str) -> str:
    """nats-server's system subject that takes an updated account JWT (JWT mode: the hub
    pushes revocations through it)."""
    return f"$SYS.REQ.ACCOUNT.{account}.CLAIMS.UPDATE"


REPORT_STREAM = "SB_REPORTS"
DESIRED_BUCKET = "desired"
JS_DOMAIN = "hub"


# Reply inboxes. nats-py names a request's reply subject ``<prefix>.<random>.<n>``; each kind
# of client gets its own prefix and its login may subscribe only under it, so no login can
# read another's replies (docs/sync.md "Who may do what"). Device ids are ``[a-z0-9-]``, so
# ``_INBOX.<id>`` never collides with these ``_``-led names.
INBOX_ENROLL = "_INBOX._enroll"  # the shared bootstrap login
INBOX_OPERATOR = "_INBOX._op"  # the shared operator login (CLI, TUI)
INBOX_HUB = "_INBOX._hub"  # the hub's own connection (device RPC requests)


# nats.micro's service discovery (``$SRV.PING``, ``$SRV.INFO``...): operators may ask.
SERVICE_DISCOVERY_ALL = "$SRV.>"


def inbox_all(prefix: str) -> str:
    """Every reply subject under an inbox prefix (what its login may receive)."""
    return f"{prefix}.>"


def valid_device_id(device_id: object) -> bool:
    return isinstance(device_id, str) and DEVICE_ID_RE.fullmatch(device_id) is not None


def device_inbox(device_id: str) -> str:
    """A device's inbox prefix: the hub lets it receive only replies under this."""
    return f"_INBOX.{device_id}"


def valid_subject(subject: object, *, wildcards: bool = True) -> bool:
    """A subject nats-server accepts in a config: dot-separated non-empty tokens without
    whitespace or control characters; ``*`` and ``>`` only as whole tokens (``>`` last)."""
    if not isinstance(subject, str) or not subject:
        return False
    tokens = subject.split(".")
    for i, tok in enumerate(tokens):
        if not _TOKEN_RE.fullmatch(tok):
            return False
        if ("*" in tok or ">" in tok) and (
            not wildcards or tok not in ("*", ">") or (tok == ">" and i != len(tokens) - 1)
        ):
            return False
    return True


def api(verb: str) -> str:
    """Operator API verb, e.g. ``api("devices.list")`` -> ``sb.api.devices.list``."""
    return f"{API_PREFIX}.{verb}"


def api_verb(subject: str) -> str:
    """The verb of an API request's subject (``sb.api.devices.list`` -> ``devices.list``)."""
    return subject[len(API_PREFIX) + 1 :]


API_ALL = api(">")


def fleet_change(kind: str) -> str:
    return f"{FLEET_CHANGES_PREFIX}.{kind}"


FLEET_CHANGES_ALL = fleet_change(">")


def report(device_id: str) -> str:
    return f"sb.dev.{device_id}.report"


def heartbeat(device_id: str) -> str:
    return f"sb.dev.{device_id}.heartbeat"


def rpc(device_id: str, verb: str) -> str:
    return f"sb.dev.{device_id}.rpc.{verb}"


def device_auth(device_id: str, step: str) -> str:
    """A device's JWT renewal over its own link: ``challenge`` (the hub answers a nonce),
    then ``renew`` (the nonce signed with the device's nkey; the hub answers a new JWT)."""
    return f"sb.dev.{device_id}.auth.{step}"


DEVICE_AUTH_WILDCARD = "sb.dev.*.auth.*"


def device_all(device_id: str) -> str:
    """Every subject under a device's own prefix (its publish permission)."""
    return f"sb.dev.{device_id}.>"


def rpc_all(device_id: str) -> str:
    """Every RPC verb of a device (its RPC server's subscription and permission)."""
    return rpc(device_id, ">")


# The desired bucket's own JetStream names. ``$KV.>`` subjects never cross a leafnode link
# between JetStream domains (nats-server denies them; measured with 2.15.1), so the hub's
# ``desired`` bucket republishes each put, headers only, onto ``sb.desired.<id>``: the
# device's prompt to read its key. Bucket config:
# ``republish: {src: "$KV.desired.>", dest: "sb.desired.>", headers_only: true}``.
DESIRED_PROMPT_PREFIX = "sb.desired"
DESIRED_REPUBLISH_SRC = f"$KV.{DESIRED_BUCKET}.>"
DESIRED_REPUBLISH_DEST = f"{DESIRED_PROMPT_PREFIX}.>"


def desired_prompt(device_id: str) -> str:
    """The subject a put of ``device_id``'s desired key is republished on (headers only)."""
    return f"{DESIRED_PROMPT_PREFIX}.{device_id}"


DESIRED_PROMPT_WILDCARD = desired_prompt("*")


def kv_prefix(bucket: str) -> str:
    """A KV bucket's key subjects' prefix, ``$KV.<bucket>.``."""
    return f"$KV.{bucket}."


def desired_key(device_id: str) -> str:
    """The subject of a device's key in the desired bucket (a put's own message)."""
    return f"{kv_prefix(DESIRED_BUCKET)}{device_id}"


def desired_direct_get(device_id: str, domain: str | None = JS_DOMAIN) -> str:
    """The JetStream direct-get of a device's desired key: with the hub's domain prefix as a
    leaf device sends it, or (``domain=None``) as the server checks it after mapping the
    prefix away, which is also what a device connected straight to the hub sends."""
    api_prefix = f"$JS.{domain}.API" if domain else "$JS.API"
    return f"{api_prefix}.DIRECT.GET.KV_{DESIRED_BUCKET}.{desired_key(device_id)}"


REPORT_WILDCARD = "sb.dev.*.report"


# Hub workers (docs/architecture.md "Scale path"): with ``workers = M`` the report stream's
# subject transform stores ``sb.dev.<id>.report`` as ``sb.dev.<id>.report.<p>``, ``p`` =
# nats-server's ``partition(M, 1)`` of the device id (a hash, deterministic), and worker
# ``p`` consumes ``sb.dev.*.report.<p>`` only. Devices publish the same subject as ever.
def report_partition_transform(partitions: int) -> str:
    """The stream subject transform's destination for ``partitions`` workers."""
    return f"sb.dev.{{{{wildcard(1)}}}}.report.{{{{partition({partitions},1)}}}}"


def report_partition_of(device_id: str, partitions: int) -> int:
    """The partition nats-server's ``partition(M, 1)`` files a device's reports under
    (FNV-1a 32 of the token, modulo M): which worker ingests a device."""
    h = 0x811C9DC5
    for byte in device_id.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % partitions


def report_partition(index: int) -> str:
    """Every report stored for worker ``index`` (a consumer filter)."""
    return f"{REPORT_WILDCARD}.{index}"


# The control-plane owner's lease (hub/lease.py): one key in a KV bucket whose max age is
# the lease's TTL, so a dead owner's key expires by itself.
LEASE_BUCKET = "hub_lease"
LEASE_KEY = "control-plane"
HEARTBEAT_WILDCARD = "sb.dev.*.heartbeat"


# Presence over hub workers: with ``workers = M`` an account subject mapping (nats-server
# config or account JWT, hub/natsconf.py) turns ``sb.dev.<id>.heartbeat`` into
# ``sb.dev.<id>.heartbeat.<p>``, ``p`` the same ``partition(M, 1)`` as the device's reports,
# so worker ``p`` receives (and answers) its own devices' heartbeats only. Devices publish
# the same subject as ever; one hub (M = 1) has no mapping.
def heartbeat_partition_transform(partitions: int) -> str:
    """The account mapping's destination for ``partitions`` workers."""
    return f"sb.dev.{{{{wildcard(1)}}}}.heartbeat.{{{{partition({partitions},1)}}}}"


def heartbeat_partition(index: int) -> str:
    """Every heartbeat mapped to worker ``index`` (its subscription)."""
    return f"{HEARTBEAT_WILDCARD}.{index}"


def device_from_subject(subject: str) -> str | None:
    parts = subject.split(".")
    if len(parts) >= 3 and parts[0] == "sb" and parts[1] == "dev":
        return parts[2]
    return None
