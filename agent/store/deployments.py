"""Deployments: one row per attempt to run one exact desired revision (``agent.precedence``),
each write with its ``deployment`` outbox row; ``seq`` orders rows by their latest write."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from agent.errors import StoreError
from agent.precedence import SOURCES, Revision
from agent.reconcile.ports import Deployment, DeploymentStatus
from agent.store import outbox
from agent.store.base import StoreBase, dumps, loads, rows
from protocol.reported import DEPLOYMENT_STATUSES, DeploymentPayload, RowKind

STATUSES = DEPLOYMENT_STATUSES

_BY_REVISION = (
    "SELECT * FROM deployments WHERE source = ? AND generation = ? AND spec_hash = ?"
    " ORDER BY id DESC LIMIT 1"
)


def payload(d: Deployment) -> DeploymentPayload:
    # source and spec_hash make the row name its exact revision: a local override and a
    # hub revision may carry the same generation (agent.precedence).
    return {
        "generation": d.generation,
        "source": d.source,
        "spec_hash": d.spec_hash,
        "bundle_ref": d.bundle_ref,
        "status": d.status,
        "reason": d.reason,
        "started_at": d.started_at,
        "finished_at": d.finished_at,
    }


def from_row(r: Mapping[str, Any]) -> Deployment:
    return Deployment(
        generation=r["generation"],
        bundle_ref=r["bundle_ref"],
        spec=loads(r["spec"]),
        status=r["status"],
        reason=r["reason"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        source=r["source"],
        spec_hash=r["spec_hash"],
        seq=r["seq"],
    )


def _next_seq(c: sqlite3.Connection) -> int:
    return int(c.execute("SELECT coalesce(max(seq), 0) + 1 FROM deployments").fetchone()[0])


def begin(
    c: sqlite3.Connection, revision: Revision, bundle_ref: str | None, spec: dict[str, Any] | None
) -> None:
    if revision.source not in SOURCES:
        raise StoreError(f"deployment source must be one of {SOURCES}")
    now = time.time()
    seq = _next_seq(c)
    c.execute(
        "INSERT INTO deployments (generation, source, spec_hash, seq, bundle_ref, spec,"
        " status, started_at) VALUES (?, ?, ?, ?, ?, ?, 'applying', ?)",
        (revision.generation, revision.source, revision.spec_hash, seq, bundle_ref,
         None if spec is None else dumps(spec), now),
    )  # fmt: skip
    d = Deployment(
        revision.generation, bundle_ref, spec, "applying", None, now, None,
        revision.source, revision.spec_hash, seq,
    )  # fmt: skip
    outbox.append(c, RowKind.DEPLOYMENT, payload(d), now)


def set_status(
    c: sqlite3.Connection, revision: Revision, status: DeploymentStatus, reason: str | None
) -> None:
    if status not in STATUSES:
        raise StoreError(f"deployment status must be one of {STATUSES}")
    now = time.time()
    key = (revision.source, revision.generation, revision.spec_hash)
    row = c.execute(_BY_REVISION.replace("*", "id"), key).fetchone()
    if row is None:
        raise StoreError(f"no deployment for {revision.describe()}")
    finished = None if status == "applying" else now
    c.execute(
        "UPDATE deployments SET status = ?, reason = ?, finished_at = ?, seq = ? WHERE id = ?",
        (status, reason, finished, _next_seq(c), row[0]),
    )
    d = from_row(rows(c, "SELECT * FROM deployments WHERE id = ?", (row[0],))[0])
    outbox.append(c, RowKind.DEPLOYMENT, payload(d), now)


def of_revision(c: sqlite3.Connection, revision: Revision) -> Deployment | None:
    found = rows(c, _BY_REVISION, (revision.source, revision.generation, revision.spec_hash))
    return from_row(found[0]) if found else None


def last_healthy(c: sqlite3.Connection, other_than: Revision | None = None) -> Deployment | None:
    """The deployment most recently written as healthy, optionally not ``other_than``."""
    if other_than is None:
        found = rows(
            c, "SELECT * FROM deployments WHERE status = 'healthy' ORDER BY seq DESC LIMIT 1"
        )
    else:
        found = rows(
            c,
            "SELECT * FROM deployments WHERE status = 'healthy'"
            " AND NOT (source = ? AND generation = ? AND spec_hash = ?)"
            " ORDER BY seq DESC LIMIT 1",
            (other_than.source, other_than.generation, other_than.spec_hash),
        )
    return from_row(found[0]) if found else None


def latest(c: sqlite3.Connection) -> Deployment | None:
    """The deployment written last: what the device reports as its deployment."""
    found = rows(c, "SELECT * FROM deployments ORDER BY seq DESC, id DESC LIMIT 1")
    return from_row(found[0]) if found else None


def newest(c: sqlite3.Connection, limit: int = 20) -> list[Deployment]:
    found = rows(c, "SELECT * FROM deployments ORDER BY id DESC LIMIT ?", (int(limit),))
    return [from_row(r) for r in found]


class DeploymentsStore(StoreBase):
    def deployment_begin(
        self, revision: Revision, bundle_ref: str | None, spec: dict[str, Any] | None
    ) -> None:
        self.write_now(begin, revision, bundle_ref, spec)

    def deployment_set(
        self, revision: Revision, status: DeploymentStatus, reason: str | None
    ) -> None:
        self.write_now(set_status, revision, status, reason)

    def deployment(self, revision: Revision) -> Deployment | None:
        return self.read_now(of_revision, revision)

    def last_healthy_deployment(self, *, other_than: Revision | None = None) -> Deployment | None:
        """The deployment most recently written as healthy, optionally not ``other_than``."""
        return self.read_now(last_healthy, other_than)

    def latest_deployment(self) -> Deployment | None:
        """The deployment written last: what the device reports as its deployment."""
        return self.read_now(latest)

    def deployments(self, limit: int = 20) -> list[Deployment]:
        return self.read_now(newest, limit)
