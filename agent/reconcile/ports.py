"""What the reconciler needs from the agent's store, as a Protocol.

The reconcile package depends only on this; ``agent.store`` implements it. Keeping the seam
narrow lets the executor be tested with an in-memory recorder and the store on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

Severity = Literal["debug", "info", "warning", "error"]
DeploymentStatus = Literal["applying", "healthy", "failed", "rolled_back"]


@dataclass(frozen=True)
class Deployment:
    """One attempt to run a desired generation on this device."""

    generation: int
    bundle_ref: str | None  # "name@version", None for "run nothing"
    spec: dict[str, Any] | None  # BundleSpec.to_dict()
    status: DeploymentStatus
    reason: str | None
    started_at: float  # wall clock, seconds
    finished_at: float | None


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
        self, generation: int, bundle_ref: str | None, spec: dict[str, Any] | None
    ) -> None: ...

    def deployment_set(self, generation: int, status: DeploymentStatus, reason: str | None) -> None:
        """Update the latest deployment row for ``generation``."""
        ...

    def deployment(self, generation: int) -> Deployment | None: ...

    def last_healthy_deployment(self, *, before_generation: int | None = None) -> Deployment | None:
        """Newest deployment with status "healthy" (optionally older than a generation)."""
        ...

    def save_observed(self, containers: list[dict[str, Any]]) -> None:
        """Replace the stored snapshot of observed containers (reported to the hub)."""
        ...
