"""The whole request pipeline for one API call, without NATS: size, key, verb, role, body,
handler, and every failure turned into the protocol error shape.

Synchronous on purpose: the service runs it on the store's one worker thread, and unit tests
call it directly against a real SQLite file.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from bundles.errors import BundleError, BundleInvalid, VersionConflict
from hub.api.handlers import HANDLERS, Caller, Change, Handler, Outcome
from hub.api.validate import parse_body
from hub.errors import Conflict, Forbidden, HubError, Invalid, NotFound, TooLarge
from hub.store import Store
from protocol import errors as codes
from protocol.api import DRY_RUN_VERBS, MAX_BODY_BYTES, REQUESTS, is_write

log = logging.getLogger(__name__)


@dataclass
class Reply:
    body: dict[str, Any]
    changes: list[Change] = field(default_factory=list)
    caller: Caller | None = None

    @property
    def code(self) -> str:
        err = self.body.get("error")
        return str(err["code"]) if isinstance(err, dict) else "ok"


def _bundle_error(exc: BundleError) -> HubError:
    if isinstance(exc, VersionConflict):
        return Conflict(str(exc), field="version")
    if isinstance(exc, BundleInvalid):
        errors = list(getattr(exc, "errors", []))
        first = errors[0] if errors else None
        path = getattr(first, "path", None)
        # Pushed specs sit under "spec" in the body; ref errors already name their field.
        fld = path if path in ("bundle", "target") else (f"spec.{path}" if path else "spec")
        summary = "; ".join(str(e) for e in errors) or str(exc)
        details = [e.to_dict() for e in errors if hasattr(e, "to_dict")]
        return Invalid(summary, field=fld, details=details or None)
    return Invalid(str(exc))


def dispatch(
    store: Store,
    verb: str,
    raw: bytes,
    api_key: str | None,
    handlers: Mapping[str, Handler] = HANDLERS,
) -> Reply:
    caller: Caller | None = None
    try:
        caller, body = admit(store, verb, raw, api_key, handlers)
        outcome = handlers[verb](store, body, caller)
        return Reply(outcome.result, outcome.changes, caller)
    except Exception as exc:
        return _failed(verb, exc, caller)


def admit(
    store: Store, verb: str, raw: bytes, api_key: str | None, known: Collection[str]
) -> tuple[Caller, dict[str, Any]]:
    """Every check before a handler runs: size, key, verb, role, body. Raises ``HubError``."""
    if len(raw) > MAX_BODY_BYTES:
        raise TooLarge(f"request body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}", "$")
    key = store.authenticate(api_key)
    caller = Caller(key["id"], key["name"], key["role"])
    if verb not in known or verb not in REQUESTS:
        raise NotFound(f"unknown API verb {verb!r}", field="verb")
    if is_write(verb) and caller.role != "admin" and not _dry_run(verb, raw):
        raise Forbidden(f"{verb} needs an admin key; this key is {caller.role}")
    return caller, parse_body(raw, REQUESTS[verb][1])


def _dry_run(verb: str, raw: bytes) -> bool:
    """The one exception to the role check: a dry run writes nothing, so any key may ask.
    A body that does not parse is no dry run (the caller gets ``forbidden`` as before)."""
    if verb not in DRY_RUN_VERBS:
        return False
    try:
        return parse_body(raw, REQUESTS[verb][1]).get("dry_run") is True
    except HubError:
        return False


def _failed(verb: str, exc: Exception, caller: Caller | None) -> Reply:
    if isinstance(exc, HubError):
        return Reply(exc.to_body(), caller=caller)
    if isinstance(exc, BundleError):
        return Reply(_bundle_error(exc).to_body(), caller=caller)
    log.error("API verb %s failed", verb, exc_info=exc)
    return Reply(codes.error_body(codes.INTERNAL, "internal error; see the hub log"), caller=caller)


AsyncHandler = Callable[[dict[str, Any], Caller], Awaitable[Outcome]]
RunSync = Callable[..., Awaitable[Any]]


async def dispatch_async(
    run_sync: RunSync,
    store: Store,
    verb: str,
    raw: bytes,
    api_key: str | None,
    handler: AsyncHandler,
) -> Reply:
    """For verbs that wait on something other than the store (device RPC): the checks run on
    the store thread (``run_sync``), the handler on the event loop."""
    caller: Caller | None = None
    try:
        caller, body = await run_sync(admit, store, verb, raw, api_key, (verb,))
        outcome = await handler(body, caller)
        return Reply(outcome.result, outcome.changes, caller)
    except Exception as exc:
        return _failed(verb, exc, caller)
