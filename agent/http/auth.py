"""Bearer-token authentication and role checks, as one middleware.

Each route declares the least role it needs (``None``: public). A presented token that does
not verify counts against the failure budget of that token from that address; once spent,
that token from there gets 429 until the window passes, while other tokens (a valid one from
another local process) still work (``agent.http.ratelimit``). Tokens are never logged: log
lines name the token's id and name, never its text.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agent.http.context import AppContext
from agent.http.errors import ApiError, Handler
from agent.http.ratelimit import token_key
from agent.http.tokens import Role, TokenInfo, role_allows
from protocol import errors as perr

log = logging.getLogger(__name__)

CTX_KEY: web.AppKey[AppContext] = web.AppKey("ctx", AppContext)
ROLES_KEY: web.AppKey[dict[tuple[str, str], Role | None]] = web.AppKey("roles", dict)


def _challenge(request: web.Request) -> str:
    # Basic only for the HTML page, where it makes a browser prompt; APIs say Bearer.
    scheme = "Basic" if request.path == "/" else "Bearer"
    return f'{scheme} realm="signalbeam-agent"'


@dataclass(frozen=True)
class Caller:
    token: TokenInfo

    @property
    def actor(self) -> str:
        return f"token:{self.token.name}"


# aiohttp >= 3.14 wants typed request keys (a plain string warns); older ones lack the type.
_REQUEST_KEY: Any = getattr(web, "RequestKey", None)
CALLER_KEY: Any = _REQUEST_KEY("sb_caller", Caller) if _REQUEST_KEY else "sb_caller"
SAFE_METHODS = frozenset({"GET", "HEAD"})


def caller(request: web.Request) -> Caller:
    found = request.get(CALLER_KEY)
    if not isinstance(found, Caller):
        raise ApiError(perr.UNAUTHORIZED, "authentication required")
    return found


def presented_token(request: web.Request) -> tuple[str, str] | None:
    """(scheme, token) from ``Authorization: Bearer T`` or ``Basic`` (any user, password T);
    None when no token was sent. A malformed header gives an empty token (a failed try).

    Basic exists for the HTML page: a phone's browser prompts for it natively, no JS.
    """
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        return (scheme, value) if value else None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return scheme, ""
        return scheme, decoded.partition(":")[2]
    return scheme, ""


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def _route_key(request: web.Request) -> tuple[str, str] | None:
    route = request.match_info.route
    resource = route.resource
    if resource is None or (route.method == "*" and request.match_info.http_exception):
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return method, resource.canonical


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.match_info.http_exception is not None:
        return await handler(request)  # 404/405: the error middleware shapes it
    key = _route_key(request)
    roles = request.app[ROLES_KEY]
    if key is None or key not in roles:
        raise ApiError(perr.INTERNAL, "route has no declared role")  # a bug: fail closed
    need = roles[key]
    if need is None:
        return await handler(request)
    ctx = request.app[CTX_KEY]
    client = client_address(request)
    presented = presented_token(request)
    if presented is None:
        raise ApiError(
            perr.UNAUTHORIZED,
            "authentication required: send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": _challenge(request)},
        )
    scheme, token = presented
    limit_key = token_key(client, token)
    wait = ctx.limiter.retry_after(limit_key)
    if wait > 0:
        raise ApiError(
            perr.RATE_LIMITED,
            "too many failed authentication attempts with this token; try again later",
            headers={"Retry-After": str(int(wait) + 1)},
        )
    if scheme == "basic" and request.method not in SAFE_METHODS:
        # A browser re-sends cached Basic credentials on its own, even for a form another
        # site posts to us (CSRF); a bearer token is only ever sent on purpose.
        raise ApiError(
            perr.UNAUTHORIZED,
            "changes need Authorization: Bearer <token>; HTTP Basic is for reading only",
            headers={"WWW-Authenticate": 'Bearer realm="signalbeam-agent"'},
        )
    info = ctx.tokens.verify(token)
    if info is None:
        ctx.limiter.failed(limit_key)
        # The address's count only bounds the log: a flood of new tokens is one line a window.
        seen = ctx.limiter.failed(client)
        if seen < ctx.limiter.max_failures:
            log.warning(
                "rejected an invalid or revoked token",
                extra={"device": ctx.device_id, "client": client, "path": request.path},
            )
        elif seen == ctx.limiter.max_failures:
            log.warning(
                "rejected %d invalid tokens from %s within %.0f s; not logging more of them",
                seen,
                client,
                ctx.limiter.window,
                extra={"device": ctx.device_id, "client": client},
            )
        raise ApiError(
            perr.UNAUTHORIZED,
            "invalid or revoked token",
            headers={"WWW-Authenticate": _challenge(request)},
        )
    ctx.limiter.succeeded(limit_key)
    if not role_allows(info.role, need):
        raise ApiError(
            perr.FORBIDDEN, f"this needs the {need} role; token {info.name!r} is {info.role}"
        )
    request[CALLER_KEY] = Caller(info)
    return await handler(request)
