"""The reconcile loop's options and the result of one run (``ReconcileLoop.last_result``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agent.reconcile.executor import ExecutorOptions

Outcome = Literal["succeeded", "failed", "noop", "waiting", "held", "deferred"]


@dataclass(frozen=True)
class LoopOptions:
    interval: float = 60.0  # timer trigger
    poll: float = 1.0  # how often to run due probes and look at timers and a deferral
    debounce: float = 0.2  # triggers arriving within this are one run
    min_uptime: float = 5.0  # a service without a probe must stay up this long to count
    crash_limit: int = 3  # crashes inside the health window that mean "crash-looping"
    health_window: float | None = None  # overrides the bundle's update.health_window
    error_backoff: float = 5.0  # retry delay after a run that could not reach the engine
    max_apply_failures: int = 3  # failed runs (other than pulls) before the generation fails
    prune: bool = True
    executor: ExecutorOptions = field(default_factory=ExecutorOptions)

    def __post_init__(self) -> None:
        checks = {
            "interval": self.interval > 0,
            "poll": self.poll > 0,
            "debounce": self.debounce >= 0,
            "min_uptime": self.min_uptime >= 0,
            "crash_limit": self.crash_limit >= 1,
            "health_window": self.health_window is None or self.health_window >= 0,
            "error_backoff": self.error_backoff >= 0,
            "max_apply_failures": self.max_apply_failures >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"LoopOptions: invalid {', '.join(bad)}")


@dataclass(frozen=True)
class LoopResult:
    """The outcome of the latest run, for ``status``."""

    at: float  # wall clock
    trigger: str
    generation: int | None
    target: str | None  # bundle@version the run converged towards
    outcome: Outcome
    reason: str | None
    steps: int = 0
    noops: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "trigger": self.trigger,
            "generation": self.generation,
            "target": self.target,
            "outcome": self.outcome,
            "reason": self.reason,
            "steps": self.steps,
            "noops": list(self.noops),
        }
