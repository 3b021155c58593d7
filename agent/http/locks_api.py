"""Update locks over the local API: a field tech says "not now" at the device (audited).

``POST /v1/update-lock`` takes (or refreshes) the caller's lock, ``DELETE`` releases it,
``GET`` lists every lock held (files an app created, too) and the gate's last state. While
any lock is held the agent defers a new revision (``agent.reconcile.gates``); a rollback is
never held back. Each change is an event with the token that made it.
"""

from __future__ import annotations

from aiohttp import web

from agent.http import validate as v
from agent.http.auth import CTX_KEY, caller
from agent.http.errors import ApiError, json_response
from agent.http.tokens_api import _json_object
from agent.store import updatelocks
from agent.updategate import file_locks
from protocol import errors as perr


def _who(value: object, default: str, *, given: bool) -> str:
    """The holder named (``given``: the field was sent, so null is an error, not "me")."""
    if not given:
        return default[: updatelocks.MAX_WHO]
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > updatelocks.MAX_WHO
        or not value.isprintable()
    ):
        raise v.invalid("who", f"must be 1-{updatelocks.MAX_WHO} printable characters")
    return value.strip()


def _poke(request: web.Request, why: str) -> bool:
    loop = request.app[CTX_KEY].current_reconcile()
    if loop is None:
        return False
    loop.trigger(why)
    return True


async def get_update_lock(request: web.Request) -> web.Response:
    v.only(request.query, ())
    ctx = request.app[CTX_KEY]
    lock_dir = ctx.config.update.lock_dir
    held, gate = await ctx.store.read(lambda s: (updatelocks.held(s), updatelocks.last_gate(s)))
    locks = file_locks(lock_dir) + held
    return json_response(
        {
            "held": bool(locks),
            "locks": [lk.to_dict() for lk in locks],
            "lock_dir": str(lock_dir),
            "gate": gate,
        }
    )


async def post_update_lock(request: web.Request) -> web.Response:
    v.only(request.query, ())
    ctx = request.app[CTX_KEY]
    who = caller(request)
    body = await _json_object(request)
    for key in body:
        if key not in ("who", "reason"):
            raise v.invalid(key, "unknown field (allowed: who, reason)")
    holder = _who(body.get("who"), who.token.name, given="who" in body)
    reason = body.get("reason")
    # Printable only (no newline, NUL, escape or bidi control), as ``who``: it goes into the
    # event message that `signalbeam events` and the hub show, where a newline forges a line.
    if "reason" in body and (
        not isinstance(reason, str)
        or len(reason) > updatelocks.MAX_REASON
        or not reason.isprintable()
    ):
        raise v.invalid("reason", f"must be at most {updatelocks.MAX_REASON} printable characters")
    lock, new = await ctx.store.write(updatelocks.hold, holder, reason or None, who.actor)
    return json_response(
        {**lock.to_dict(), "reason": reason or None, "new": new}, status=201 if new else 200
    )


async def delete_update_lock(request: web.Request) -> web.Response:
    v.only(request.query, ("who",))
    ctx = request.app[CTX_KEY]
    who = caller(request)
    holder = _who(request.query.get("who"), who.token.name, given="who" in request.query)
    lock = await ctx.store.write(updatelocks.release, holder, who.actor)
    if lock is None:
        raise ApiError(perr.NOT_FOUND, f"{holder} holds no update lock", "who")
    # A deferred update may start now: look at once rather than at the next poll.
    triggered = _poke(request, f"http:{who.token.name}:update-lock-released")
    return json_response({"released": True, **lock.to_dict(), "reconcile_triggered": triggered})
