"""Plain row types the store hands to readers (HTTP API, CLI, sync). Each has ``to_dict``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class EventRow:
    seq: int
    kind: str
    severity: str
    message: str
    data: dict[str, Any] | None
    ts: float  # wall clock, epoch seconds
    mono: float  # time.monotonic() when recorded (only comparable within one boot)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OutboxRow:
    """One pending upstream delta. ``payload_json`` is stored text, ready to embed as-is."""

    seq: int
    kind: str
    payload_json: str
    size: int
    created_at: float

    @property
    def payload(self) -> Any:
        return json.loads(self.payload_json)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "ts": self.created_at, "payload": self.payload}


@dataclass(frozen=True)
class JournalStep:
    index: int
    step: dict[str, Any]
    status: str
    error: str | None
    ts: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JournalRun:
    id: int
    generation: int
    trigger: str
    plan: list[dict[str, Any]]
    started_at: float
    finished_at: float | None
    result: str | None  # None while running (or when the agent died mid-run)
    reason: str | None
    steps: tuple[JournalStep, ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["steps"] = [s.to_dict() for s in self.steps]
        return d


@dataclass(frozen=True)
class MetricPoint:
    ts: float  # sample time (raw) or bucket start (1m, 1h)
    metric: str
    min: float
    avg: float
    max: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DesiredRevision:
    id: int
    generation: int
    source: str
    content_hash: str | None
    rollout_id: str | None
    bundle_ref: str | None
    received_at: float
    cleared_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
