"""Container health, driven by the agent itself so it behaves the same on Docker and Podman.

Podman without systemd never runs HEALTHCHECKs, and Docker's own results arrive late and
differently, so the agent runs every probe: a bundle's http/tcp probe from the agent to
127.0.0.1 (the port itself for host-network containers, its published host port otherwise),
a bundle's exec probe or the image's HEALTHCHECK command through engine exec. This module
is the pure part; the probes themselves (network, engine exec) are ``agent.reconcile.probe``.

Timing and evaluation (``next_due``, ``due``, ``evaluate``, ``gate``) are pure and follow
Docker's documented HEALTHCHECK semantics (checked against dockerd itself in
tests/integration/test_health_docker.py):

- the first probe runs ``interval`` after the container started, each next one ``interval``
  after the previous one finished (so a slow starter is not probed at t=0);
- a probe that fails or runs past ``timeout`` is a failure; one success makes it healthy;
- ``retries`` consecutive failures make it unhealthy;
- a failure inside ``start_period`` (judged by when the probe started) does not count while
  the container has never been healthy; after a first success, every failure counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from agent.runtime.base import ImageHealthcheck, ObservedContainer
from bundles.model import ContainerSpec

ProbeKind = Literal["http", "tcp", "exec", "image"]
Status = Literal["starting", "healthy", "unhealthy"]


@dataclass(frozen=True)
class ProbeSpec:
    kind: ProbeKind
    interval: float
    timeout: float
    retries: int
    start_period: float
    port: int | None = None
    path: str = "/"
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    at: float  # monotonic seconds: when the probe started (start_period is judged on this)
    detail: str = ""
    done: float | None = None  # when it finished (the next one is due interval later); None: at


@dataclass(frozen=True)
class HealthState:
    status: Status = "starting"
    failing_streak: int = 0
    last_probe_at: float | None = None  # when the last probe started
    detail: str = ""
    last_done_at: float | None = None  # when the last probe finished


def probe_for(spec: ContainerSpec, image_hc: ImageHealthcheck | None) -> ProbeSpec | None:
    """The bundle's own probe wins; else the image's HEALTHCHECK; else none."""
    hc = spec.healthcheck
    if hc is not None:
        return ProbeSpec(
            hc.type, hc.interval, hc.timeout, max(1, hc.retries), hc.start_period,
            hc.port, hc.path, tuple(hc.command),
        )  # fmt: skip
    if image_hc is not None:
        return ProbeSpec(
            "image",
            image_hc.interval,
            image_hc.timeout,
            max(1, image_hc.retries),
            image_hc.start_period,
            command=image_hc.command,
        )
    return None


def next_due(state: HealthState, spec: ProbeSpec, started_at: float) -> float:
    """When the next probe is due (monotonic): ``interval`` after the container started for
    the first one, ``interval`` after the previous one finished for the others (Docker)."""
    last = state.last_done_at if state.last_done_at is not None else state.last_probe_at
    return (started_at if last is None else last) + spec.interval


def due(state: HealthState, spec: ProbeSpec, now: float, *, started_at: float) -> bool:
    return now >= next_due(state, spec, started_at)


def evaluate(
    state: HealthState, result: ProbeResult, spec: ProbeSpec, started_at: float
) -> HealthState:
    """Fold one probe result into the state (Docker's rules; ``started_at`` monotonic)."""
    done = result.at if result.done is None else result.done
    if result.ok:
        return HealthState("healthy", 0, result.at, result.detail, done)
    # Docker: a failure that started inside start_period is not counted while the container
    # is still "starting" (never healthy); its streak stays as it was.
    in_start_period = result.at - started_at < spec.start_period
    if in_start_period and state.status == "starting":
        return replace(state, last_probe_at=result.at, detail=result.detail, last_done_at=done)
    streak = state.failing_streak + 1
    status: Status = "unhealthy" if streak >= spec.retries else state.status
    return HealthState(status, streak, result.at, result.detail, done)


@dataclass(frozen=True)
class Verdict:
    decision: Literal["wait", "healthy", "failed"]
    reason: str


def gate(
    services: Sequence[str],
    containers: Mapping[str, ObservedContainer | None],
    health: Mapping[str, HealthState | None],
    crashes: Mapping[str, int],
    *,
    now: float,
    deadline: float,
    running_since: Mapping[str, float],
    min_uptime: float,
    crash_limit: int,
    window: float,
    waiting: Mapping[str, str] | None = None,
) -> Verdict:
    """Is a new deployment healthy, failed, or still to be waited for? Pure.

    A service with a probe is ready when the probe says healthy; one without is ready when it
    has kept running for ``min_uptime`` (so a process that dies at once is never "healthy").
    ``waiting`` says why the planner holds a service back (its ``depends_on``), so a window
    that runs out names the dependency, not only "no container".
    """
    held = waiting or {}
    pending: list[str] = []
    for svc in services:
        c = containers.get(svc)
        n = crashes.get(svc, 0)
        if n >= crash_limit:
            return Verdict("failed", f"service {svc!r} is crash-looping ({n} crashes)")
        h = health.get(svc)
        if h is not None and h.status == "unhealthy":
            return Verdict("failed", f"service {svc!r} is unhealthy: {h.detail or 'probe failed'}")
        if svc in held and (c is None or c.state != "running"):
            pending.append(f"{svc}: {held[svc]}")
        elif c is None:
            pending.append(f"{svc}: no container")
        elif c.state != "running":
            code = f" (code {c.exit_code})" if c.exit_code is not None else ""
            pending.append(f"{svc}: {c.state}{code}")
        elif h is not None:
            if h.status != "healthy":
                pending.append(f"{svc}: {h.status}")
        elif now - running_since.get(svc, now) < min_uptime:
            pending.append(f"{svc}: running for less than {min_uptime}s")
    if not pending:
        return Verdict("healthy", "all services healthy")
    if now >= deadline:
        return Verdict("failed", f"not healthy within {window}s: {'; '.join(pending)}")
    return Verdict("wait", "; ".join(pending))
