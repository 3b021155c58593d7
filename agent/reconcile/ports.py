"""What the reconciler needs from the agent's store, as a Protocol.

The reconcile package depends only on this; ``agent.store`` implements it. Keeping the seam
narrow lets the executor be tested with an in-memory recorder and the store on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from agent.precedence import Revision, Source
from protocol.reported import DeploymentStatus  # the statuses a deployment row reports

__all__ = ["Deployment", "DeploymentStatus", "Recorder", "Severity"]

Severity = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True)
class Deployment:
    """One attempt to run one exact desired revision (source, generation, spec hash) on
    this device. Local and hub revisions may share a generation number; they never share a
    deployment (``agent.precedence``)."""

    generation: int
    bundle_ref: str | None  # "name@version", None for "run nothing"
    spec: dict[str, Any] | None  # BundleSpec.to_dict()
    status: DeploymentStatus
    reason: str | None
    started_at: float  # wall clock, seconds
    finished_at: float | None
    source: Source = "hub"
    spec_hash: str = ""
    seq: int = 0  # order of the latest write to this row: the newest is what is reported

    @property
    def revision(self) -> Revision:
        return Revision(self.source, self.generation, self.spec_hash)


class Recorder(Protocol):
    # Each call is one SQLite transaction that also writes an outbox row, so everything the
    # reconciler records reaches the hub exactly once.
    def event(
        self,
        kind: str,
        message: str,
        *,
        severity: Severity = "info",
        data: dict[str, Any] | None = None,
    ) -> int:
        """Append to the device event log; returns the event's sequence number."""
        ...

    def journal_begin(self, generation: int, trigger: str, plan: list[dict[str, Any]]) -> int:
        """Start a reconcile run; returns its id."""
        ...

    def journal_step(
        self,
        run_id: int,
        index: int,
        step: dict[str, Any],
        status: Literal["started", "done", "failed", "skipped"],
        error: str | None = None,
    ) -> None: ...

    def journal_end(
        self, run_id: int, result: Literal["succeeded", "failed", "noop"], reason: str | None
    ) -> None: ...

    def deployment_begin(
        self, revision: Revision, bundle_ref: str | None, spec: dict[str, Any] | None
    ) -> None:
        """Record a deployment of ``revision`` (status ``applying``)."""
        ...

    def deployment_set(
        self, revision: Revision, status: DeploymentStatus, reason: str | None
    ) -> None:
        """Update the deployment of exactly ``revision``."""
        ...

    def deployment(self, revision: Revision) -> Deployment | None:
        """The deployment of exactly this revision (source, generation and spec hash)."""
        ...

    def latest_deployment(self) -> Deployment | None:
        """The deployment written last: the one the device reports."""
        ...

    def last_healthy_deployment(self, *, other_than: Revision | None = None) -> Deployment | None:
        """The deployment most recently written as "healthy" (optionally not ``other_than``):
        the rollback target."""
        ...

    def save_observed(self, containers: list[dict[str, Any]]) -> None:
        """Replace the stored snapshot of observed containers (reported to the hub)."""
        ...
