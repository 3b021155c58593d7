"""The OpenAPI 3 document of the local API, served at ``/openapi.json``.

Written by hand (not generated from the route table) so it is a second statement of the
contract: tests check both directions (every route documented, every documented path
served), and the schemathesis fuzz test holds responses to these schemas.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from agent.store.updatelocks import MAX_REASON, MAX_WHO

NUM = {"type": "number"}
INT = {"type": "integer"}
STR = {"type": "string"}
# An update lock's holder and reason, as locks_api checks them (printable; the holder with at
# least one non-space; the schema says ASCII, a subset of what the handler takes).
WHO = {"type": "string", "minLength": 1, "maxLength": MAX_WHO, "pattern": "^[ -~]*[!-~][ -~]*$"}
REASON = {"type": "string", "maxLength": MAX_REASON, "pattern": "^[ -~]*$"}  # printable
LOCK_BODY = {
    "type": "object",
    "properties": {"who": WHO, "reason": REASON},
    "additionalProperties": False,  # the handler names an unknown field
}


def _n(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _obj(
    props: dict[str, Any], required: list[str] | None = None, extra: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    if not extra:
        out["additionalProperties"] = False
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


ERROR = _obj(
    {
        "error": _obj(
            {"code": STR, "message": STR, "field": STR, "details": {}},
            ["code", "message"],
        )
    },
    ["error"],
)

CONTAINER = _obj(
    {
        "id": STR,
        "name": STR,
        "service": STR,
        "bundle": STR,
        "version": STR,
        "spec_hash": STR,
        "state": STR,
        "health": STR,
        "exit_code": _n(INT),
        "restart_count": INT,
        "image": STR,
        "started_at": _n(NUM),
        "created_at": _n(NUM),
        "ports": {
            "type": "array",
            "items": _obj({"container": INT, "protocol": STR, "host": _n(INT)}),
        },
        "stats": _n(_obj({"cpu_percent": NUM, "memory_bytes": INT, "memory_limit": _n(INT)})),
    },
    ["id", "name", "service", "state", "health", "image"],
)

EVENT = _obj(
    {
        "seq": INT,
        "kind": STR,
        "severity": STR,
        "message": STR,
        "data": _n({}),
        "ts": NUM,
        "mono": NUM,
    },
    ["seq", "kind", "severity", "message", "ts"],
)

SUMMARY_DESIRED = _n(
    _obj(
        {
            "generation": INT,
            "source": {"type": "string", "enum": ["hub", "local"]},
            "bundle_ref": _n(STR),
            "content_hash": _n(STR),
            "rollout_id": _n(STR),
        },
        ["generation", "source"],
    )
)

STATUS = _obj(
    {
        "device_id": STR,
        "agent_version": STR,
        "uptime_seconds": NUM,
        "started_at": NUM,
        "now": NUM,
        "hub": _obj(
            {
                "configured": {"type": "boolean"},
                # Online means the hub itself answered within about one heartbeat interval;
                # last_contact is that answer's time (docs/sync.md "What online means").
                "online": _n({"type": "boolean"}),
                "last_contact": _n(NUM),
                "unreachable_since": _n(NUM),
            },
            ["configured", "online", "last_contact", "unreachable_since"],
        ),
        "engine": _n(_obj({"kind": STR, "url": STR})),
        "reconcile_loop": _n(
            _obj(
                {
                    "at": NUM,
                    "trigger": STR,
                    "generation": _n(INT),
                    "outcome": STR,
                    "reason": _n(STR),
                }
            )
        ),
        "running_bundle": _n(STR),
        "desired": SUMMARY_DESIRED,
        "deployment": _n(
            _obj({"generation": INT, "bundle_ref": _n(STR), "status": STR, "reason": _n(STR)})
        ),
        "last_reconcile": _n(_obj({"run_id": INT, "result": _n(STR), "reason": _n(STR)})),
        "stuck": _n(STR),
        "containers": {"type": "array", "items": {"type": "object"}},
        "outbox": _obj({"pending": INT, "bytes": INT}),
        # The data dir's filesystem: full (reason as /health/ready and the 507s give it)
        # when under 1 MiB is free or a write failed for lack of space (docs/agent.md).
        "disk": _obj(
            {"full": {"type": "boolean"}, "reason": _n(STR), "free_bytes": _n(INT)},
            ["full", "reason", "free_bytes"],
        ),
        "last_event_seq": INT,
        "tls_fingerprint": _n(STR),
    },
    [
        "device_id",
        "agent_version",
        "uptime_seconds",
        "hub",
        "running_bundle",
        "desired",
        "stuck",
        "disk",
    ],
)

TOKEN = _obj(
    {
        "id": STR,
        "name": STR,
        "role": {"type": "string", "enum": ["viewer", "operator", "admin"]},
        "created_at": NUM,
        "created_by": STR,
        "revoked_at": _n(NUM),
    },
    ["id", "name", "role", "created_at", "revoked_at"],
)

SCHEMAS: dict[str, Any] = {
    "Error": ERROR,
    "Container": CONTAINER,
    "Event": EVENT,
    "Status": STATUS,
    "Token": TOKEN,
}

# The time forms the API accepts. The pattern lists them for generators and clients, and
# admits only times the server accepts (1970-01-01 to 9999-12-31, validate.py): relative
# forms of at most ~30 years, epoch seconds of at most 11 digits (year 5138), RFC 3339 years
# 1971-9998 (so no zone offset crosses a bound). The day is capped at 28 only so every
# string it admits is a real date (the server accepts any valid RFC 3339 date in range).
TIME = {
    "type": "string",
    "pattern": (
        r"^(-([0-9]{1,9}s|[0-9]{1,7}m|[0-9]{1,5}h|[0-9]{1,4}d)|[0-9]{1,11}(\.[0-9]{1,9})?"
        r"|(197[1-9]|19[89][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
        r"-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
        r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
        r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
    ),
}

# One SSE event per log line ("message"); a failing stream ends with an "error" event
# whose data is the JSON error shape. Keepalive comment lines are not events.
SSE_EVENT = {
    "type": "object",
    "properties": {"event": {"type": "string", "enum": ["message", "error"]}, "data": STR},
    "required": ["data"],
}

NAME_PARAM = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "Container name or service name",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"},
    "example": "web",
}


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes}


AUTHED = (401, 403, 404, 405, 422, 429)
PUBLIC: list[dict[str, Any]] = [{}]
BEARER: list[dict[str, Any]] = [{"bearer": []}]


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    role: str | None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = AUTHED,
    ok_status: str = "200",
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary + (f" (role: {role})" if role else " (no authentication)"),
        "parameters": params or [],
        "responses": {ok_status: ok, **_errors(*errors)},
        "security": BEARER if role else PUBLIC,
    }
    if body is not None:
        op["requestBody"] = body
    return op


def _also_ok(op: dict[str, Any], status: str, response: dict[str, Any]) -> dict[str, Any]:
    """An operation with a second success status (a POST that may find its object there)."""
    op["responses"] = {status: response, **op["responses"]}
    return op


LOCK = _obj({"who": STR, "since": NUM, "source": STR}, ["who", "since", "source"])


def document() -> dict[str, Any]:
    since = _q("since", TIME, "Epoch seconds, RFC 3339 with zone, or relative like -24h")
    until = _q("until", TIME, "Same forms as since")
    number_list = {"type": "array", "items": NUM}
    series = _obj(
        {
            "ts": number_list,
            "min": number_list,
            "avg": number_list,
            "max": number_list,
            "count": {"type": "array", "items": INT},
        },
        ["ts", "min", "avg", "max", "count"],
    )
    paths: dict[str, Any] = {
        "/": {
            "get": _op(
                "HTML status page (HTTP Basic: any user, token as password)",
                {"description": "Page", "content": {"text/html": {"schema": STR}}},
                role="viewer",
            )
        },
        "/health/live": {
            "get": _op(
                "Liveness", _json(_obj({"status": STR}, ["status"])), role=None, errors=(405, 422)
            )
        },
        "/health/ready": {
            "get": _op(
                "Readiness: store and engine answer",
                _json(_obj({"status": STR, "checks": {"type": "object"}}, ["status", "checks"])),
                role=None,
                errors=(405, 422, 503),
            )
        },
        "/openapi.json": {
            "get": _op("This document", _json({"type": "object"}), role=None, errors=(405,))
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics (text format)",
                {"description": "Metrics", "content": {"text/plain": {"schema": STR}}},
                role="viewer",
            )
        },
        "/v1/status": {"get": _op("Device status", _json(_ref("Status")), role="viewer")},
        "/v1/containers": {
            "get": _op(
                "This device's containers, with CPU/memory",
                _json(
                    _obj(
                        {"containers": {"type": "array", "items": _ref("Container")}},
                        ["containers"],
                    )
                ),
                role="viewer",
                errors=(*AUTHED, 503),
            )
        },
        "/v1/containers/{name}": {
            "get": _op(
                "One container",
                _json(_ref("Container")),
                role="viewer",
                params=[NAME_PARAM],
                errors=(*AUTHED, 503),
            )
        },
        "/v1/containers/{name}/logs": {
            "get": _op(
                "Container logs; follow=true streams (chunked text, or SSE with format=sse)",
                {
                    "description": "Log lines",
                    "content": {
                        "text/plain": {"schema": STR},
                        "text/event-stream": {"schema": SSE_EVENT},
                    },
                },
                role="viewer",
                params=[
                    NAME_PARAM,
                    _q("tail", {"type": "integer", "minimum": 0, "maximum": 10000}, "Last N lines"),
                    _q("follow", {"type": "boolean"}, "Keep streaming new lines"),
                    since,
                    _q("format", {"type": "string", "enum": ["text", "sse"]}, "Stream format"),
                ],
                errors=(*AUTHED, 503),
            )
        },
        "/v1/containers/{name}/restart": {
            "post": _op(
                "Restart a container (audited)",
                _json(_ref("Container")),
                role="operator",
                params=[
                    NAME_PARAM,
                    {
                        **_q(
                            "timeout",
                            {"type": "integer", "minimum": 0, "maximum": 120},
                            "Stop timeout, seconds (default 10)",
                        ),
                        # The explicit fuzz example restarts a real container: keep it short.
                        "example": 1,
                    },
                ],
                errors=(*AUTHED, 409, 503),
            )
        },
        "/v1/metrics": {
            "get": _op(
                "Local metric samples (raw) and rollups (1m, 1h), one column set per metric",
                _json(
                    _obj(
                        {
                            "resolution": STR,
                            "since": NUM,
                            "until": _n(NUM),
                            "points": INT,
                            "truncated": {"type": "boolean"},
                            "series": {"type": "object", "additionalProperties": series},
                        },
                        ["resolution", "since", "until", "points", "truncated", "series"],
                    )
                ),
                role="viewer",
                params=[
                    _q("resolution", {"type": "string", "enum": ["raw", "1m", "1h"]}, "Default 1m"),
                    since,
                    until,
                    _q(
                        "metric",
                        {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$"},
                        "One metric",
                    ),
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": 100000}, "Max points"),
                ],
            )
        },
        "/v1/events": {
            "get": _op(
                "Device event log, paged by sequence",
                _json(
                    _obj(
                        {
                            "events": {"type": "array", "items": _ref("Event")},
                            "next_after_seq": _n(INT),
                        },
                        ["events", "next_after_seq"],
                    )
                ),
                role="viewer",
                params=[
                    _q(
                        "after_seq",
                        {"type": "integer", "minimum": 0, "maximum": 2**62},
                        "Events after this sequence (omit: newest)",
                    ),
                    _q(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 1000},
                        "Page size, default 100",
                    ),
                ],
            )
        },
        "/v1/desired": {
            "get": _op(
                "Current desired state and recent revisions",
                _json(
                    _obj(
                        {
                            "desired": _n(
                                _obj(
                                    {
                                        "generation": INT,
                                        "source": STR,
                                        "spec": _n({"type": "object"}),
                                    }
                                )
                            ),
                            "revisions": {"type": "array", "items": {"type": "object"}},
                        },
                        ["desired", "revisions"],
                    )
                ),
                role="viewer",
            )
        },
        "/v1/journal": {
            "get": _op(
                "Reconcile journal, newest first",
                _json(
                    _obj(
                        {
                            "runs": {
                                "type": "array",
                                "items": _obj(
                                    {
                                        "id": INT,
                                        "generation": INT,
                                        "result": _n(STR),
                                        "steps": {"type": "array"},
                                    }
                                ),
                            }
                        },
                        ["runs"],
                    )
                ),
                role="viewer",
                params=[
                    _q(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 200},
                        "Runs, default 20",
                    )
                ],
            )
        },
        "/v1/reconcile": {
            "post": _op(
                "Reconcile now (audited)",
                _json(
                    _obj({"triggered": {"type": "boolean"}, "event_seq": INT}, ["triggered"]),
                    "Accepted",
                ),
                role="operator",
                ok_status="202",
                errors=(*AUTHED, 503),
            )
        },
        "/v1/local/desired": {
            "post": _op(
                "Apply a bundle locally: a field override, reported to the hub, cleared by the next hub generation",
                _json(
                    _obj(
                        {
                            "generation": INT,
                            "source": STR,
                            "bundle_ref": STR,
                            "content_hash": _n(STR),
                            "reconcile_triggered": {"type": "boolean"},
                        },
                        ["generation", "source", "bundle_ref"],
                    ),
                    "Created",
                ),
                role="operator",
                ok_status="201",
                errors=(400, *AUTHED, 413),
                body={
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "application/yaml": {"schema": STR},
                    },
                },
            ),
            "delete": _op(
                "Clear the local override (audited)",
                _json(
                    _obj(
                        {
                            "cleared": {"type": "boolean"},
                            "desired_generation": _n(INT),
                            "reconcile_triggered": {"type": "boolean"},
                        },
                        ["cleared"],
                    )
                ),
                role="operator",
            ),
        },
        "/v1/update-lock": {
            "get": _op(
                "Update locks held (lock files and local-API locks) and the update gate's state",
                _json(
                    _obj(
                        {
                            "held": {"type": "boolean"},
                            "locks": {"type": "array", "items": LOCK},
                            "lock_dir": STR,
                            "gate": _n({"type": "object"}),
                        },
                        ["held", "locks", "lock_dir", "gate"],
                    )
                ),
                role="viewer",
            ),
            "post": _also_ok(
                _op(
                    "Hold an update lock: new revisions wait until it is released (audited)",
                    _json(LOCK, "Created (200: an existing lock, its reason refreshed)"),
                    role="operator",
                    ok_status="201",
                    errors=(400, *AUTHED, 413),
                    body={
                        "required": True,
                        "content": {"application/json": {"schema": LOCK_BODY}},
                    },
                ),
                "200",
                _json(LOCK, "An existing lock, its reason refreshed"),
            ),
            "delete": _op(
                "Release an update lock (yours, or ?who=NAME) (audited)",
                _json(LOCK),
                role="operator",
                params=[_q("who", WHO, "Holder of the lock (default: your token's name)")],
                errors=(*AUTHED, 404),
            ),
        },
        "/v1/tokens": {
            "get": _op(
                "List tokens (never their secrets)",
                _json(_obj({"tokens": {"type": "array", "items": _ref("Token")}}, ["tokens"])),
                role="admin",
                params=[_q("include_revoked", {"type": "boolean"}, "Include revoked tokens")],
            ),
            "post": _op(
                "Create a token; its text is returned once (audited)",
                _json({"allOf": [_ref("Token"), _obj({"token": STR}, ["token"])]}, "Created"),
                role="admin",
                ok_status="201",
                errors=(400, *AUTHED, 409, 413),
                body={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _obj(
                                {
                                    "name": {
                                        "type": "string",
                                        "pattern": "^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$",
                                    },
                                    "role": {
                                        "type": "string",
                                        "enum": ["viewer", "operator", "admin"],
                                    },
                                },
                                ["name"],
                                extra=False,
                            )
                        }
                    },
                },
            ),
        },
        "/v1/tokens/{id}": {
            "delete": _op(
                "Revoke a token (audited)",
                _json(_ref("Token")),
                role="admin",
                params=[
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{12}$"},
                    }
                ],
            )
        },
    }
    responses = {
        f"E{code}": {
            "description": desc,
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for code, desc in (
            (400, "Bad request"),
            (401, "No, invalid or revoked token"),
            (403, "The token's role is not enough"),
            (404, "Not found"),
            (405, "Method not allowed"),
            (409, "Conflict"),
            (413, "Body too large"),
            (422, "Invalid input; error.field names it"),
            (429, "Too many failed authentications"),
            (503, "Engine or reconcile loop unavailable"),
            (507, "The device's disk is full: nothing was written"),
        )
    }
    for ops in paths.values():
        for method, op in ops.items():
            if method in ("post", "delete"):  # every write (diskguard.py)
                op["responses"].update(_errors(507))
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "SignalBeam agent local API",
            "version": "1",
            "description": "For field technicians. Errors: {error: {code, message, field?}}.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": responses,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


_CACHED: bytes | None = None


async def get_openapi(request: web.Request) -> web.Response:
    global _CACHED
    if request.query:
        from agent.http.validate import only

        only(request.query, ())
    if _CACHED is None:
        _CACHED = json.dumps(document(), separators=(",", ":")).encode()
    return web.Response(body=_CACHED, content_type="application/json")
