"""Watches the target's containers between runs: runs their probes when due, remembers each
container's health, and says what the health gate and ``depends_on`` need to know.

The rules (probe timing, evaluation, the gate) are the pure functions of
``agent.reconcile.health``; this class only holds their state, by container id, and does
the I/O (listing is the loop's; probing is here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.reconcile.health import HealthState, ProbeSpec, due, evaluate, next_due, probe_for
from agent.reconcile.plan import Readiness, Target
from agent.reconcile.ports import Recorder
from agent.reconcile.probe import run_probe
from agent.runtime.base import Engine, ObservedContainer


@dataclass(frozen=True)
class Snapshot:
    """The target's current container per service (None: none yet), and their health."""

    current: Mapping[str, ObservedContainer | None]
    health: Mapping[str, HealthState | None]  # by service; None: no probe (or no container)
    running_since: Mapping[str, float]  # by service, monotonic

    def signature(self, readiness: Mapping[str, Readiness]) -> object:
        """What ``depends_on`` waits on: a change means plan again."""
        return (
            sorted((s, c.id, c.state) for s, c in self.current.items() if c is not None),
            sorted(readiness.items()),
        )


class HealthMonitor:
    def __init__(self, engine: Engine, recorder: Recorder, interval: float) -> None:
        self.engine = engine
        self.recorder = recorder
        self.interval = interval  # the longest sleep without a probe due
        self._health: dict[str, HealthState] = {}  # by container id
        self._probes: dict[str, ProbeSpec | None] = {}  # by container id
        self._started: dict[str, float] = {}  # container id -> monotonic first seen running
        # container id -> the engine's (started_at, restart_count) of the run the health
        # above belongs to: a container started again (by us or by its restart policy, seen
        # stopped in between or not) starts its health over, as Docker's own does. Without
        # this a restarted dependency kept its old "healthy" and a ``service_healthy``
        # dependent was started before it served again.
        self._run_of: dict[str, tuple[float | None, int]] = {}
        self._next_at = 0.0  # monotonic; 0 = look at the containers on the next tick

    def due(self, now: float) -> bool:
        return now >= self._next_at

    def look_again(self) -> None:
        """The containers may change (a run is starting): look at them on the next tick."""
        self._next_at = 0.0

    def status_of(self, container_id: str) -> str | None:
        h = self._health.get(container_id)
        return None if h is None else h.status

    def readiness(self, observed: Sequence[ObservedContainer]) -> dict[str, Readiness]:
        """The health verdict per container id that ``service_healthy`` dependencies need,
        for the containers as just ``observed``: a verdict earned in an earlier run of a
        container (it was restarted since the last tick, by us or by its restart policy) is
        not its verdict now, so it reads ``starting`` until the next tick judges this run."""
        runs = {c.id: (c.started_at, c.restart_count) for c in observed}
        out: dict[str, Readiness] = {}
        for cid, probe in self._probes.items():
            if probe is None:
                out[cid] = "none"
            elif cid in runs and self._run_of.get(cid) != runs[cid]:
                out[cid] = "starting"
            else:
                out[cid] = self._health.get(cid, HealthState()).status
        return out

    async def tick(self, target: Target, observed: list[ObservedContainer], now: float) -> Snapshot:
        """Probe the target's current containers that are due; forget those gone."""
        wanted = {s.service: s for s in target.services}
        current: dict[str, ObservedContainer | None] = {s: None for s in wanted}
        for c in observed:
            want = wanted.get(c.service)
            if want is None or want.spec_hash != c.spec_hash:
                continue
            prev = current.get(c.service)
            if prev is None or c.state == "running":
                current[c.service] = c
        live_ids: set[str] = set()
        for cur in current.values():
            if cur is None:
                continue
            live_ids.add(cur.id)
            run = (cur.started_at, cur.restart_count)
            if cur.state != "running" or self._run_of.get(cur.id, run) != run:
                self._health.pop(cur.id, None)
                self._started.pop(cur.id, None)
            if cur.state == "running":
                self._started.setdefault(cur.id, now)
                self._run_of[cur.id] = run
            else:
                self._run_of.pop(cur.id, None)
        for gone in set(self._health) - live_ids:
            self._health.pop(gone, None)
            self._probes.pop(gone, None)
        for gone in set(self._run_of) - live_ids:
            self._run_of.pop(gone, None)
        await asyncio.gather(
            *(self._probe(c, wanted[s].spec, now) for s, c in current.items() if c is not None)
        )
        # Sleep until the earliest probe is due (or the timer, with none).
        next_at = now + self.interval
        for cur in current.values():
            probe = self._probes.get(cur.id) if cur is not None else None
            if cur is not None and probe is not None:
                state = self._health.get(cur.id) or HealthState()
                next_at = min(next_at, next_due(state, probe, self._started.get(cur.id, now)))
        self._next_at = next_at
        return Snapshot(
            current,
            {
                s: (self._health.get(c.id) if c is not None and self._probes.get(c.id) else None)
                for s, c in current.items()
            },
            {
                s: self._started[c.id]
                for s, c in current.items()
                if c is not None and c.id in self._started
            },
        )

    async def _probe(self, c: ObservedContainer, spec: Any, now: float) -> None:
        if c.id not in self._probes:
            image_hc = (
                None if spec.healthcheck is not None else await self.engine.image_healthcheck(c.id)
            )
            self._probes[c.id] = probe_for(spec, image_hc)
        probe = self._probes[c.id]
        if probe is None or c.state != "running":
            return
        state = self._health.get(c.id, HealthState())
        # Docker's timing: the first probe one interval after the start, not at once.
        if not due(state, probe, now, started_at=self._started.get(c.id, now)):
            return
        res = await run_probe(self.engine, c, probe, now)
        new = evaluate(state, res, probe, self._started.get(c.id, now))
        self._health[c.id] = new
        # Only transitions into or out of "unhealthy" are worth an event.
        if new.status != state.status and "unhealthy" in (new.status, state.status):
            self.recorder.event(
                f"container.{new.status}",
                f"{c.service} is {new.status}: {new.detail}",
                severity="warning" if new.status == "unhealthy" else "info",
                data={"service": c.service, "container": c.id, "detail": new.detail},
            )
