"""Operator API keys and device enrollment tokens: stored only as SHA-256 hashes.

A secret is ``<prefix>_<id>_<random>`` (``protocol.api``): the id names it in lists and
revocations, the hash of the whole string finds it on use. Over the API the requester makes
the secret and sends it (the reply carries none: issue 19); local tools (``signalbeam-hub
init``, ``admin-key``) let the store make it. Secrets are shown once, at creation.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from typing import Any

from hub.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from hub.store.base import StoreBase
from hub.timeutil import now_iso
from protocol.api import KEY_PREFIX, TOKEN_PREFIX, secret_id
from protocol.api import new_secret as make_secret


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret(prefix: str, given: str | None = None, field: str = "key") -> tuple[str, str]:
    """``(id, secret)``: ``given`` (made by the requester) checked, or a new one."""
    secret = make_secret(prefix) if given is None else given
    ident = secret_id(secret, prefix)
    if ident is None:
        raise Invalid(
            f"{field} must be {prefix}_<8 hex>_<32-64 of A-Z a-z 0-9 _ -> (made by the client)",
            field=field,
        )
    return ident, secret


def _taken(c: sqlite3.Connection, table: str, ident: str, field: str) -> None:
    if c.execute(f"SELECT 1 FROM {table} WHERE id = ?", (ident,)).fetchone():
        # 32 random bits of id: a clash is a retry, never an overwrite.
        raise Conflict(f"a {field} with id {ident} exists; make a new one", field=field)


class AccessStore(StoreBase):
    # --- API keys ------------------------------------------------------------------------
    def create_api_key(
        self, name: str, role: str, key: str | None = None
    ) -> tuple[dict[str, Any], str]:
        ident, key = new_secret(KEY_PREFIX, key, "key")
        with self.tx() as c:
            _taken(c, "api_keys", ident, "key")
            c.execute(
                "INSERT INTO api_keys (id, name, role, key_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                (ident, name, role, hash_secret(key), now_iso()),
            )
        return self.get_api_key(ident), key

    def get_api_key(self, ident: str) -> dict[str, Any]:
        row = self.row(
            "SELECT id, name, role, created_at, revoked, revoked_at FROM api_keys WHERE id = ?",
            (ident,),
        )
        if row is None:
            raise NotFound(f"no API key {ident!r}", field="id")
        row["revoked"] = bool(row["revoked"])
        return row

    def list_api_keys(self) -> list[dict[str, Any]]:
        out = self.rows(
            "SELECT id, name, role, created_at, revoked, revoked_at FROM api_keys"
            " ORDER BY created_at, id"
        )
        for r in out:
            r["revoked"] = bool(r["revoked"])
        return out

    def revoke_api_key(self, ident: str) -> dict[str, Any]:
        with self.tx() as c:
            key = self.get_api_key(ident)
            if key["revoked"]:
                return key
            if key["role"] == "admin" and (
                self.scalar("SELECT count(*) FROM api_keys WHERE role = 'admin' AND revoked = 0")
                <= 1
            ):
                # Revoking the last admin key would lock every operator out for good.
                raise Conflict("this is the last admin key; create another first", field="id")
            c.execute(
                "UPDATE api_keys SET revoked = 1, revoked_at = ? WHERE id = ?", (now_iso(), ident)
            )
        return self.get_api_key(ident)

    def authenticate(self, key: str | None) -> dict[str, Any]:
        """The key's record, or ``Unauthorized`` for a missing, unknown or revoked key."""
        if not key:
            raise Unauthorized("missing API key (header Sb-Api-Key)")
        row = self.row(
            "SELECT id, name, role, revoked FROM api_keys WHERE key_hash = ?", (hash_secret(key),)
        )
        if row is None:
            raise Unauthorized("unknown API key")
        if row["revoked"]:
            raise Unauthorized("API key revoked")
        return row

    # --- enrollment tokens ---------------------------------------------------------------
    def create_enrollment_token(
        self, tenant: str, expires_in: int, max_uses: int, token: str | None = None
    ) -> tuple[dict[str, Any], str]:
        ident, token = new_secret(TOKEN_PREFIX, token, "token")
        now = time.time()
        with self.tx() as c:
            _taken(c, "enrollment_tokens", ident, "token")
            c.execute(
                "INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?, ?)",
                (tenant, now_iso(now)),
            )
            c.execute(
                "INSERT INTO enrollment_tokens (id, token_hash, tenant, expires_at, max_uses,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    ident,
                    hash_secret(token),
                    tenant,
                    now_iso(now + expires_in),
                    max_uses,
                    now_iso(now),
                ),
            )
        return self.get_enrollment_token(ident), token

    def get_enrollment_token(self, ident: str) -> dict[str, Any]:
        row = self.row(
            "SELECT id, tenant, expires_at, max_uses, uses, revoked, created_at"
            " FROM enrollment_tokens WHERE id = ?",
            (ident,),
        )
        if row is None:
            raise NotFound(f"no enrollment token {ident!r}", field="id")
        row["revoked"] = bool(row["revoked"])
        return row

    def list_enrollment_tokens(self) -> list[dict[str, Any]]:
        out = self.rows(
            "SELECT id, tenant, expires_at, max_uses, uses, revoked, created_at"
            " FROM enrollment_tokens ORDER BY created_at, id"
        )
        for r in out:
            r["revoked"] = bool(r["revoked"])
        return out

    def revoke_enrollment_token(self, ident: str) -> dict[str, Any]:
        with self.tx() as c:
            self.get_enrollment_token(ident)
            c.execute("UPDATE enrollment_tokens SET revoked = 1 WHERE id = ?", (ident,))
        return self.get_enrollment_token(ident)

    def consume_enrollment_token(self, token: str, now: float | None = None) -> str:
        """Use a token once for an enrollment; returns its tenant.

        For the enrollment handler (sync issue): call it inside the same ``tx()`` that creates
        the device, so a failed enrollment does not use up the token.
        """
        stamp = now_iso(now)
        with self.tx() as c:
            row = self.row(
                "SELECT id, tenant, expires_at, max_uses, uses, revoked FROM enrollment_tokens"
                " WHERE token_hash = ?",
                (hash_secret(token),),
            )
            if row is None:
                raise Unauthorized("unknown enrollment token", field="token")
            if row["revoked"]:
                raise Forbidden("enrollment token revoked", field="token")
            if row["expires_at"] <= stamp:
                raise Forbidden(f"enrollment token expired at {row['expires_at']}", field="token")
            if row["uses"] >= row["max_uses"]:
                raise Forbidden("enrollment token used up", field="token")
            c.execute("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ?", (row["id"],))
            return str(row["tenant"])
