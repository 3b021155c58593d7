"""Recorded schema migrations, applied in order, each in its own transaction.

sqlite-utils builds the tables; it is imported only when a migration is pending, because it
costs about 4 MB of RSS and an up-to-date database never needs it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sbutil import sqlite
from sbutil.sqlite import Migration

if TYPE_CHECKING:
    from sqlite_utils import Database


def _v1_initial(db: Database) -> None:
    db.create_table("identity", {"key": str, "value": str}, pk="key")
    db.create_table("meta", {"key": str, "value": str}, pk="key")
    # Sequence counters live apart from the rows they number: sent outbox rows are deleted,
    # and a reused number would be discarded by the hub as a duplicate.
    db.create_table("sequences", {"name": str, "value": int}, pk="name", not_null={"value"})
    db.create_table(
        "desired_revisions",
        {
            "id": int,
            "generation": int,
            "source": str,
            "spec": str,
            "content_hash": str,
            "rollout_id": str,
            "bundle_ref": str,
            "received_at": float,
            "cleared_at": float,
            "cleared_by": str,
        },
        pk="id",
        not_null={"generation", "source", "received_at"},
    )
    db.table("desired_revisions").create_index(["source", "generation"], unique=True)
    db.create_table(
        "deployments",
        {
            "id": int,
            "generation": int,
            "bundle_ref": str,
            "spec": str,
            "status": str,
            "reason": str,
            "started_at": float,
            "finished_at": float,
        },
        pk="id",
        not_null={"generation", "status", "started_at"},
    )
    db.table("deployments").create_index(["generation"])
    db.create_table(
        "observed_containers",
        {"position": int, "name": str, "data": str, "updated_at": float},
        pk="position",
        not_null={"data", "updated_at"},
    )
    db.create_table(
        "journal_runs",
        {
            "id": int,
            "generation": int,
            "trigger": str,
            "plan": str,
            "started_at": float,
            "finished_at": float,
            "result": str,
            "reason": str,
        },
        pk="id",
        not_null={"generation", "trigger", "plan", "started_at"},
    )
    db.create_table(
        "journal_steps",
        {
            "id": int,
            "run_id": int,
            "idx": int,
            "step": str,
            "status": str,
            "error": str,
            "ts": float,
        },
        pk="id",
        not_null={"run_id", "idx", "step", "status", "ts"},
        foreign_keys=[("run_id", "journal_runs", "id")],
    )
    db.table("journal_steps").create_index(["run_id"])
    db.create_table(
        "events",
        {
            "seq": int,
            "kind": str,
            "severity": str,
            "message": str,
            "data": str,
            "ts": float,
            "mono": float,
        },
        pk="seq",
        not_null={"kind", "severity", "message", "ts", "mono"},
    )
    db.create_table(
        "metric_samples",
        {"ts": float, "metric": str, "value": float},
        not_null={"ts", "metric", "value"},
    )
    db.table("metric_samples").create_index(["ts"])
    db.table("metric_samples").create_index(["metric", "ts"])
    for table in ("metrics_1m", "metrics_1h"):
        db.create_table(
            table,
            {
                "bucket": int,
                "metric": str,
                "min": float,
                "avg": float,
                "max": float,
                "count": int,
            },
            pk=("bucket", "metric"),
            not_null={"min", "avg", "max", "count"},
        )
    db.create_table(
        "outbox",
        {
            "seq": int,
            "kind": str,
            "payload": str,
            "size": int,
            "created_at": float,
            "sent_at": float,
        },
        pk="seq",
        not_null={"kind", "payload", "size", "created_at"},
    )
    db.table("outbox").create_index(["sent_at", "seq"])


def _v2_deployment_identity(db: Database) -> None:
    # A deployment belongs to one exact desired revision (agent.precedence): the generation
    # alone is shared by a local override and the hub revision that took the same number.
    # ``seq`` orders the rows by their latest write (the newest is what the device reports).
    c = db.conn
    c.execute("ALTER TABLE deployments ADD COLUMN source TEXT NOT NULL DEFAULT 'hub'")
    c.execute("ALTER TABLE deployments ADD COLUMN spec_hash TEXT NOT NULL DEFAULT ''")
    c.execute("ALTER TABLE deployments ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
    from agent.precedence import spec_hash

    local = {
        (g, spec) for g, spec in c.execute(
            "SELECT generation, spec FROM desired_revisions WHERE source = 'local'"
        )
    }  # fmt: skip
    rows = c.execute("SELECT id, generation, spec FROM deployments").fetchall()
    for row_id, gen, spec in rows:
        source = "local" if (gen, spec) in local else "hub"
        h = spec_hash(None if spec is None else json.loads(spec))
        c.execute(
            "UPDATE deployments SET source = ?, spec_hash = ?, seq = ? WHERE id = ?",
            (source, h, row_id, row_id),
        )
    c.execute("CREATE INDEX deployments_revision ON deployments (source, generation, spec_hash)")
    c.execute("CREATE INDEX deployments_seq ON deployments (seq)")


def _v3_update_locks(db: Database) -> None:
    # Update locks taken through the local HTTP API (a field tech: "not now"); lock files
    # an app creates live in the lock directory instead (agent.updatelock). ``who`` is the
    # key: one lock per holder, taken again it is refreshed, not duplicated.
    db.create_table(
        "update_locks",
        {"who": str, "reason": str, "since": float, "actor": str},
        pk="who",
        not_null={"since"},
    )
    # What a desired revision says about gating its start (protocol.desired): the windows
    # the hub set for the device or its group (JSON list; NULL: the bundle's apply) and an
    # operator's override through locks and windows.
    db.conn.execute("ALTER TABLE desired_revisions ADD COLUMN maintenance_windows TEXT")
    db.conn.execute("ALTER TABLE desired_revisions ADD COLUMN force INTEGER NOT NULL DEFAULT 0")


def _v4_variables(conn: sqlite3.Connection) -> None:
    # A hub revision's per-device values (protocol.desired): the variables (JSON object) and
    # the secrets as they came, sealed to this device's key ({fingerprints, sealed}); never
    # a secret in clear (bundles.variables, agent.secretbox).
    conn.execute("ALTER TABLE desired_revisions ADD COLUMN variables TEXT")
    conn.execute("ALTER TABLE desired_revisions ADD COLUMN secrets TEXT")


def _with_utils(fn: Callable[[Database], None]) -> Callable[[sqlite3.Connection], None]:
    def step(conn: sqlite3.Connection) -> None:
        from sqlite_utils import Database

        fn(Database(conn, execute_plugins=False, recursive_triggers=False))

    return step


MIGRATIONS: list[Migration] = [
    (1, "initial schema", _with_utils(_v1_initial)),
    (2, "deployments keyed by exact revision", _with_utils(_v2_deployment_identity)),
    (3, "update locks and gated desired revisions", _with_utils(_v3_update_locks)),
    (4, "per-device variables and sealed secrets of desired revisions", _v4_variables),
]


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply pending migrations (``sbutil.sqlite.migrate``); returns the versions applied.
    ``applied_at`` is epoch seconds (REAL), as the agent has always written it."""
    return sqlite.migrate(conn, MIGRATIONS, stamp=time.time, applied_at_type="REAL")
