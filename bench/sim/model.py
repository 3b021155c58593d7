"""One simulated device's state, pure (no I/O): its outbox, the rows an agent would write for
each thing that happens to it, its heartbeat, and plausible metrics.

Rows use the agent's own kinds and payload shapes (``agent.store``): ``event`` (with the
device's own event seq), ``metrics.1m``, ``observed``, ``desired``, ``deployment``. The outbox
is numbered from 1 per simulator start, as a freshly enrolled agent's is; what has been
acknowledged by the stream is dropped, so the backlog is exactly the unsent rows.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from protocol.desired import DesiredState
from protocol.heartbeat import Heartbeat
from protocol.report import RawRow
from protocol.reported import RowKind

AGENT_VERSION = "0.1.0-sim"
MINUTE = 60
# The host metrics an agent's sampler reports (agent/metrics/sampler.py), minus byte counts.
HOST_METRICS = ("cpu.percent", "mem.percent", "disk.percent", "load.1", "temp.celsius")


def _dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


@dataclass
class Deployment:
    generation: int
    bundle_ref: str | None
    status: str  # applying / healthy / failed / rolled_back
    reason: str | None
    started_at: float
    finished_at: float | None = None
    containers: tuple[str, ...] = ()

    def payload(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "bundle_ref": self.bundle_ref,
            "status": self.status,
            "reason": self.reason,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


def bundle_ref(spec: dict[str, Any] | None) -> str | None:
    if not spec:
        return None
    name, version = spec.get("bundle"), spec.get("version")
    return f"{name}@{version}" if name and version else None


def container_names(spec: dict[str, Any] | None) -> tuple[str, ...]:
    if not spec:
        return ()
    out = []
    for c in spec.get("containers") or []:
        if isinstance(c, dict) and isinstance(c.get("name"), str):
            out.append(c["name"])
    return tuple(out)


@dataclass
class DeviceModel:
    device_id: str
    rng: random.Random
    outbox: list[RawRow] = field(default_factory=list)
    next_seq: int = 1
    event_seq: int = 0
    acked_seq: int = 0  # the last seq the stream acknowledged (the chain's prev_seq)
    desired_generation: int = 0  # newest revision stored
    current: Deployment | None = None  # newest deployment
    running: Deployment | None = None  # newest healthy one (what heartbeats report)
    last_bucket: int = 0
    latest: dict[str, float] = field(default_factory=dict)
    # Per-device baselines so a fleet's sparklines differ from one another.
    base: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        r = self.rng
        self.base = {
            "cpu.percent": r.uniform(3, 45),
            "mem.percent": r.uniform(20, 70),
            "disk.percent": r.uniform(15, 85),
            "load.1": r.uniform(0.05, 1.5),
            "temp.celsius": r.uniform(38, 62),
            "phase": r.uniform(0, 2 * math.pi),
        }
        self.latest = self.sample(time.time())

    # ------------------------------------------------------------------ outbox

    def _row(self, kind: RowKind, payload: Any, now: float) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self.outbox.append((seq, kind.value, now, _dumps(payload)))
        return seq

    def event(
        self, kind: str, message: str, severity: str = "info", data: Any = None, now: float = 0
    ) -> None:
        now = now or time.time()
        self.event_seq += 1
        self._row(
            RowKind.EVENT,
            {
                "seq": self.event_seq,
                "kind": kind,
                "severity": severity,
                "message": message,
                "data": data,
                "ts": now,
                "mono": time.monotonic(),
            },
            now,
        )

    def started(self, now: float) -> None:
        """What an agent writes when it starts: an event and its first (empty) snapshot."""
        self.event("agent.started", "simulated agent started", now=now)
        self._row(RowKind.OBSERVED, {"containers": [], "ts": now}, now)

    def acked(self, up_to_seq: int) -> None:
        """The stream acknowledged every row up to ``up_to_seq``: drop them."""
        self.outbox = [r for r in self.outbox if r[0] > up_to_seq]
        self.acked_seq = max(self.acked_seq, up_to_seq)

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    # ------------------------------------------------------------------ metrics

    def sample(self, now: float) -> dict[str, float]:
        """Slow sine drift around the device's baseline, plus noise; always in range."""
        out = {}
        phase = now / 600.0 + self.base["phase"]
        for name, base in self.base.items():
            if name == "phase":
                continue
            span = 100.0 if name.endswith("percent") else (8.0 if name == "load.1" else 100.0)
            wobble = 0.15 * base * math.sin(phase) + self.rng.gauss(0, 0.03 * base)
            out[name] = round(min(span, max(0.0, base + wobble)), 2)
        return out

    def rollup(self, now: float) -> None:
        """One ``metrics.1m`` row for the next minute (min/avg/max/count of six 10 s samples).

        Minutes never run ahead of the clock: with a rollup interval under a minute (tests),
        the current minute is rewritten, as a replay would be."""
        current = int(now // MINUTE * MINUTE)
        bucket = min(current, self.last_bucket + MINUTE) if self.last_bucket else current
        self.last_bucket = bucket
        samples = [self.sample(bucket + 10 * i) for i in range(6)]
        metrics = {
            name: [
                min(s[name] for s in samples),
                round(sum(s[name] for s in samples) / 6, 3),
                max(s[name] for s in samples),
                6,
            ]
            for name in HOST_METRICS
        }
        self.latest = samples[-1]
        self._row(RowKind.METRICS_1M, {"bucket": bucket, "metrics": metrics}, now)

    def backfill(self, minutes: int, now: float) -> None:
        start = int(now // MINUTE * MINUTE) - minutes * MINUTE
        self.last_bucket = start
        for _ in range(minutes):
            self.rollup(now)

    # ------------------------------------------------------------------ desired / apply

    def store_desired(self, revision: int, doc: DesiredState, now: float) -> bool:
        """The agent's ``put_desired``: a revision not above the newest stored is ignored."""
        if revision <= self.desired_generation:
            return False
        self.desired_generation = revision
        ref = bundle_ref(doc.spec)
        payload = {
            "generation": revision,
            "source": "hub",
            "content_hash": doc.content_hash,
            "rollout_id": doc.rollout_id,
            "bundle_ref": ref,
        }
        self._row(RowKind.DESIRED, payload, now)
        self.event(
            "desired.changed",
            f"desired generation {revision} ({ref or 'no bundle'}) from hub",
            data=payload,
            now=now,
        )
        return True

    def begin(self, revision: int, spec: dict[str, Any] | None, now: float) -> Deployment:
        cur = self.current
        if cur is not None and cur.status == "applying":
            self.finish(cur, "failed", f"superseded by generation {revision}", now)
        dep = Deployment(revision, bundle_ref(spec), "applying", None, now)
        dep.containers = container_names(spec)
        self.current = dep
        self._row(RowKind.DEPLOYMENT, dep.payload(), now)
        return dep

    def finish(self, dep: Deployment, status: str, reason: str | None, now: float) -> None:
        dep.status, dep.reason, dep.finished_at = status, reason, now
        self._row(RowKind.DEPLOYMENT, dep.payload(), now)
        if status == "healthy":
            self.running = dep
            self._row(RowKind.OBSERVED, {"containers": self.observed(dep), "ts": now}, now)
            self.event(
                "deployment.healthy",
                f"generation {dep.generation} ({dep.bundle_ref or 'no bundle'}) healthy",
                data={"generation": dep.generation},
                now=now,
            )
        else:
            self.event(
                "deployment.failed",
                f"generation {dep.generation} failed: {reason}",
                severity="error",
                data={"generation": dep.generation, "reason": reason},
                now=now,
            )

    def observed(self, dep: Deployment) -> list[dict[str, Any]]:
        bundle, _, version = (dep.bundle_ref or "@").partition("@")
        return [
            {
                "name": f"sb-{self.device_id}-{name}",
                "service": name,
                "bundle": bundle,
                "version": version,
                "state": "running",
                "health": "healthy",
            }
            for name in dep.containers
        ]

    # ------------------------------------------------------------------ heartbeat

    def heartbeat(self, now: float) -> Heartbeat:
        dep = self.running
        n = len(dep.containers) if dep else 0
        return Heartbeat(
            device_id=self.device_id,
            ts=round(now, 3),
            agent_version=AGENT_VERSION,
            bundle_ref=dep.bundle_ref if dep else None,
            generation=dep.generation if dep else None,
            containers_total=n,
            containers_running=n,
            containers_unhealthy=0,
            metrics={k: float(f"{v:.4g}") for k, v in self.latest.items()},
            last_seq=self.last_seq,
            outbox_pending=len(self.outbox),
        )
