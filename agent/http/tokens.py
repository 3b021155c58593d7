"""Per-technician bearer tokens, hashed at rest, in their own small SQLite file.

A token reads ``sbt_<id>_<secret>``: the id finds the row, the secret's SHA-256 is compared
with ``hmac.compare_digest``. The secret has 256 bits of entropy, so a plain (unsalted,
fast) hash is safe at rest. The file is ``<data_dir>/http-tokens.db``, kept apart from the
agent store: token writes are rare, never travel to the hub, and must survive the store
being moved aside after corruption.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.store.db import connect_on_any_disk

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
_RANK = {"viewer": 0, "operator": 1, "admin": 2}
_TOKEN = re.compile(r"sbt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}")
TOKEN_FILE = "http-tokens.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_active_name ON tokens(name) WHERE revoked_at IS NULL;
"""


def role_allows(have: str, need: str) -> bool:
    return _RANK.get(have, -1) >= _RANK[need]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    role: Role
    created_at: float
    created_by: str
    revoked_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "revoked_at": self.revoked_at,
        }


class TokenExists(ValueError):
    """An active token already has this name."""


class TokenStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        # The agent store's opener: WAL, and on a full disk the WAL index in memory, so the
        # API (which reports the full disk) starts however the last run ended.
        self._conn = connect_on_any_disk(path)
        self._conn.execute("PRAGMA synchronous=FULL")  # a revocation must survive power loss
        self._conn.executescript(_SCHEMA)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> TokenStore:
        return cls(data_dir / TOKEN_FILE)

    def close(self) -> None:
        self._conn.close()

    def create(self, name: str, role: Role, created_by: str) -> tuple[TokenInfo, str]:
        """A new token; the plain text is returned once and never stored."""
        if not NAME_RE.fullmatch(name):
            raise ValueError("name must be 1-64 characters: letters, digits, space . _ @ -")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO tokens (id, name, role, hash, created_at, created_by) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (token_id, name, role, _digest(secret), now, created_by),
                )
            except sqlite3.IntegrityError:
                raise TokenExists(f"an active token named {name!r} already exists") from None
        info = TokenInfo(token_id, name, role, now, created_by, None)
        return info, f"sbt_{token_id}_{secret}"

    def verify(self, presented: str) -> TokenInfo | None:
        """The active token matching ``presented``, or None (unknown, wrong or revoked)."""
        m = _TOKEN.fullmatch(presented)
        if not m:
            return None
        token_id, secret = m.groups()
        with self._lock:
            row = self._conn.execute(
                "SELECT id, name, role, created_at, created_by, revoked_at, hash "
                "FROM tokens WHERE id = ?",
                (token_id,),
            ).fetchone()
        if row is None:
            # Hash anyway, so an unknown id costs the same time as a wrong secret.
            hmac.compare_digest(_digest(secret), "0" * 64)
            return None
        if not hmac.compare_digest(_digest(secret), row[6]) or row[5] is not None:
            return None
        return TokenInfo(*row[:6])

    def get(self, token_id: str) -> TokenInfo | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT id, name, role, created_at, created_by, revoked_at FROM tokens "
                "WHERE id = ?",
                (token_id,),
            ).fetchone()
        return None if row is None else TokenInfo(*row)

    def list(self, *, include_revoked: bool = False) -> list[TokenInfo]:
        sql = "SELECT id, name, role, created_at, created_by, revoked_at FROM tokens"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY created_at, id").fetchall()
        return [TokenInfo(*r) for r in rows]

    def revoke(self, token_id: str) -> TokenInfo | None:
        """Revoke; returns the token as it now is, or None if no such id. Idempotent."""
        with self._lock:
            self._conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), token_id),
            )
        return self.get(token_id)
