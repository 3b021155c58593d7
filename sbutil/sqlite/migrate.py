"""The migrations runner: numbered steps, each applied once in its own transaction together
with its row in ``schema_migrations``. The lists themselves stay with each side
(``agent/store/migrations.py``, ``hub/store/migrations.py``); never edit one that shipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

# (version, name, step): a SQL script, or a function of the connection.
Migration = tuple[int, str, "str | Callable[[sqlite3.Connection], None]"]


def ensure_table(conn: sqlite3.Connection, applied_at_type: str) -> None:
    """``schema_migrations``, if missing (``applied_at`` typed as each side shipped it)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        f"(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at {applied_at_type} NOT NULL)"
    )


def applied_versions(conn: sqlite3.Connection) -> list[int]:
    return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def migrate(
    conn: sqlite3.Connection,
    migrations: Sequence[Migration],
    *,
    stamp: Callable[[], Any],
    applied_at_type: str = "TEXT",
    refuse_newer: Callable[[list[int]], BaseException] | None = None,
) -> list[int]:
    """Apply every migration not yet recorded, in order; returns the versions applied now.

    ``conn`` is in autocommit mode. ``stamp()`` is what ``applied_at`` records (its column
    type is ``applied_at_type``: each side keeps the schema it shipped). With
    ``refuse_newer``, a database holding versions this list does not know raises what it
    returns (written by a newer program). An up-to-date database costs one query.
    """
    ensure_table(conn, applied_at_type)
    done = set(applied_versions(conn))
    known = {v for v, _, _ in migrations}
    if refuse_newer is not None and done - known:
        raise refuse_newer(sorted(done - known))
    applied: list[int] = []
    for version, name, step in migrations:
        if version in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the write lock: another process may have migrated meanwhile.
            if conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
            ).fetchone():
                conn.execute("COMMIT")
                continue
            if isinstance(step, str):
                # executescript would COMMIT the open transaction first; run statements one
                # by one so the migration and its record land together or not at all.
                for stmt in statements(step):
                    conn.execute(stmt)
            else:
                step(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, stamp()),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


def statements(sql: str) -> list[str]:
    """Split a migration script into statements, keeping trigger bodies whole."""
    out: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        if line.strip().startswith("--") and not buf.strip():
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
