"""An in-memory Recorder: for unit tests, benchmarks and dry runs (the store is the real one)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from agent.precedence import Revision
from agent.reconcile.ports import Deployment, DeploymentStatus, Severity


@dataclass
class MemoryRecorder:
    events: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    deployments: list[Deployment] = field(default_factory=list)
    observed: list[dict[str, Any]] = field(default_factory=list)
    _seq: int = 0

    def event(
        self,
        kind: str,
        message: str,
        *,
        severity: Severity = "info",
        data: dict[str, Any] | None = None,
    ) -> int:
        self.events.append({"kind": kind, "message": message, "severity": severity, "data": data})
        return len(self.events)

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]

    def journal_begin(self, generation: int, trigger: str, plan: list[dict[str, Any]]) -> int:
        self.runs.append(
            {
                "generation": generation,
                "trigger": trigger,
                "plan": plan,
                "steps": [],
                "result": None,
            }
        )
        return len(self.runs)

    def journal_step(
        self,
        run_id: int,
        index: int,
        step: dict[str, Any],
        status: Literal["started", "done", "failed", "skipped"],
        error: str | None = None,
    ) -> None:
        self.runs[run_id - 1]["steps"].append((index, step["action"], status, error))

    def journal_end(
        self, run_id: int, result: Literal["succeeded", "failed", "noop"], reason: str | None
    ) -> None:
        self.runs[run_id - 1]["result"] = (result, reason)

    def _bump(self) -> int:
        self._seq += 1
        return self._seq

    def deployment_begin(
        self, revision: Revision, bundle_ref: str | None, spec: dict[str, Any] | None
    ) -> None:
        dep = Deployment(
            revision.generation, bundle_ref, spec, "applying", None, time.time(), None,
            revision.source, revision.spec_hash, self._bump(),
        )  # fmt: skip
        self.deployments.append(dep)

    def deployment_set(
        self, revision: Revision, status: DeploymentStatus, reason: str | None
    ) -> None:
        for i in range(len(self.deployments) - 1, -1, -1):
            if self.deployments[i].revision == revision:
                self.deployments[i] = replace(
                    self.deployments[i],
                    status=status,
                    reason=reason,
                    finished_at=None if status == "applying" else time.time(),
                    seq=self._bump(),
                )
                return
        raise KeyError(revision)

    def deployment(self, revision: Revision) -> Deployment | None:
        return next((d for d in reversed(self.deployments) if d.revision == revision), None)

    def by_generation(self, generation: int) -> Deployment | None:
        """For tests: the newest deployment of a generation, whatever its source."""
        return next((d for d in reversed(self.deployments) if d.generation == generation), None)

    def latest_deployment(self) -> Deployment | None:
        return max(self.deployments, key=lambda d: d.seq, default=None)

    def last_healthy_deployment(self, *, other_than: Revision | None = None) -> Deployment | None:
        return max(
            (d for d in self.deployments if d.status == "healthy" and d.revision != other_than),
            key=lambda d: d.seq,
            default=None,
        )

    def save_observed(self, containers: list[dict[str, Any]]) -> None:
        self.observed = list(containers)
