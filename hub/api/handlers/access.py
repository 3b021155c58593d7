"""Access handlers: enrollment tokens, API keys and the caller's own session."""

from __future__ import annotations

from typing import Any

from hub import __version__
from hub.api import validate as v
from hub.api.handlers.core import DAY, Caller, Change, Outcome
from hub.errors import Invalid
from hub.store import Store
from protocol.api import ROLES


# --- enrollment tokens and API keys ------------------------------------------------------
def tokens_create(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    tenant = v.name(body["tenant"], "tenant")
    expires_in = v.int_range(body, "expires_in", 60, 365 * DAY, DAY)
    max_uses = v.int_range(body, "max_uses", 1, 1_000_000, 1)
    # The token is the requester's (protocol.api SECRET_VERBS); the reply holds none.
    record, _secret = store.create_enrollment_token(tenant, expires_in, max_uses, body["token"])
    return Outcome(record, [Change("tokens", "created", record)])


def tokens_list(store: Store, _body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"items": store.list_enrollment_tokens()})


def tokens_revoke(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    record = store.revoke_enrollment_token(body["id"])
    return Outcome(record, [Change("tokens", "revoked", {"id": record["id"]})])


def keys_create(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    role = body.get("role", "readonly")
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}", field="role")
    if not body["name"].strip():
        raise Invalid("name must not be empty", field="name")
    # The key is the requester's (protocol.api SECRET_VERBS); the reply holds none.
    record, _secret = store.create_api_key(body["name"], role, body["key"])
    return Outcome(record, [Change("keys", "created", record)])


def keys_list(store: Store, _body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"items": store.list_api_keys()})


def keys_revoke(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    record = store.revoke_api_key(body["id"])
    return Outcome(record, [Change("keys", "revoked", {"id": record["id"]})])


def session_whoami(_store: Store, _body: dict[str, Any], caller: Caller) -> Outcome:
    return Outcome(
        {
            "key_id": caller.key_id,
            "name": caller.name,
            "role": caller.role,
            "hub_version": __version__,
        }
    )
