"""Token management over HTTP (admin role): list, create, revoke. Both changes are audited."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from agent.http import validate as v
from agent.http.audit import audit
from agent.http.auth import CTX_KEY, caller
from agent.http.errors import ApiError, json_response
from agent.http.tokens import NAME_RE, ROLES, TokenExists
from protocol import errors as perr

TOKEN_ID_RE = r"[0-9a-f]{12}"


async def _json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(perr.BAD_REQUEST, "body must be application/json", "body")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(perr.BAD_REQUEST, "body is not valid JSON", "body") from None
    except RecursionError:
        # json's C decoder refuses nesting deeper than the interpreter's recursion limit
        # cleanly, with this error; the token body is one flat object.
        raise ApiError(perr.BAD_REQUEST, "body is JSON nested too deeply", "body") from None
    if not isinstance(body, dict):
        raise ApiError(perr.INVALID, "body must be a JSON object", "body")
    # An unpaired surrogate escape ("\\ud800") decodes to text no UTF-8 encoder takes:
    # SQLite, the reply and the log failed on it after the handler ran (internal error).
    for key, value in body.items():
        try:
            json.dumps([key, value], ensure_ascii=False).encode()
        except UnicodeEncodeError:
            field = key.encode("utf-8", "backslashreplace").decode()[:64]
            raise v.invalid(field, "is not Unicode text (an unpaired surrogate escape)") from None
    return body


async def get_tokens(request: web.Request) -> web.Response:
    v.only(request.query, ("include_revoked",))
    revoked = v.boolean(request.query, "include_revoked", False)
    tokens = request.app[CTX_KEY].tokens.list(include_revoked=revoked)
    return json_response({"tokens": [t.to_dict() for t in tokens]})


async def post_token(request: web.Request) -> web.Response:
    v.only(request.query, ())
    ctx = request.app[CTX_KEY]
    who = caller(request)
    body = await _json_object(request)
    for key in body:
        if key not in ("name", "role"):
            raise v.invalid(key, "unknown field (allowed: name, role)")
    name = body.get("name")
    role = body.get("role", "viewer")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise v.invalid("name", "must be 1-64 characters: letters, digits, space . _ @ -")
    if role not in ROLES:
        raise v.invalid("role", f"must be one of {', '.join(ROLES)}")
    try:
        info, token = ctx.tokens.create(name, role, created_by=who.actor)
    except TokenExists as exc:
        raise ApiError(perr.CONFLICT, str(exc), "name") from None
    await audit(
        ctx,
        who,
        "local.token_created",
        f"created {role} token {name!r}",
        {"token": {"id": info.id, "name": name, "role": role}},
    )
    doc = info.to_dict()
    doc["token"] = token  # shown once; only its hash is kept
    return json_response(doc, status=201)


async def delete_token(request: web.Request) -> web.Response:
    v.only(request.query, ())
    ctx = request.app[CTX_KEY]
    who = caller(request)
    token_id = request.match_info["id"]
    if not v.re.fullmatch(TOKEN_ID_RE, token_id):
        raise v.invalid("id", "must be a token id (12 hex digits)")
    before = ctx.tokens.get(token_id)
    if before is None:
        raise ApiError(perr.NOT_FOUND, f"no token with id {token_id}")
    after = ctx.tokens.revoke(token_id)
    if before.revoked_at is None:
        await audit(
            ctx,
            who,
            "local.token_revoked",
            f"revoked token {before.name!r}",
            {"token": {"id": before.id, "name": before.name, "role": before.role}},
        )
    return json_response(after.to_dict() if after else before.to_dict())
