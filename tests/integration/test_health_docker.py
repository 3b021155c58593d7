"""The agent's health evaluation against Docker's own, on the harness's real dockerd.

Each case runs a container with a HEALTHCHECK on dockerd and records what Docker did: every
probe from ``State.Health.Log`` (start, end, exit code) and, at each look, Docker's status and
failing streak. Our pure functions are then run over the same probes: after each probe Docker
reported, ``evaluate`` must give the same status and streak, and ``next_due`` must never put a
probe later than Docker ran it was "not due yet" (Docker's first probe comes one interval after
the start, each next one an interval after the previous one finished). Bounded: a handful of
probes per case, 1-2 s intervals, no network (``--network none``)."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from dataclasses import dataclass, field

import pytest

from agent.reconcile.health import HealthState, ProbeResult, ProbeSpec, evaluate, next_due
from tests.harness.engines import EngineHandle, _unix_request, run_cli
from tests.harness.registry import Registry

pytestmark = [pytest.mark.engine, pytest.mark.slow]
IMAGE = "sbtest/pull:1.0"  # busybox sh, test, touch, rm, sleep
LOOKS_MAX = 600  # polls per case (0.1 s apart): a bound, not a timing assertion
SLACK = 0.01  # seconds: Docker's timestamps are wall clock, its timers monotonic


@dataclass(frozen=True)
class Case:
    name: str
    script: str  # the container's command: when /tmp/ready exists, the probe passes
    interval: float
    retries: int
    start_period: float
    probes: int  # how many probes to watch


CASES = [
    # The slow starter: ready after 5 s, interval 2 s, retries 3, no start period.
    Case("slow-starter", "sleep 5; touch /tmp/ready; exec sleep 600", 2.0, 3, 0.0, 4),
    # Unhealthy after two failures, then healthy at the first success.
    Case("recovers", "sleep 3; touch /tmp/ready; exec sleep 600", 1.0, 2, 0.0, 6),
    # Failures inside the start period are not counted.
    Case("start-period", "sleep 4; touch /tmp/ready; exec sleep 600", 1.0, 1, 6.0, 6),
    # Healthy inside the start period, then failing: those failures count.
    Case(
        "fails-after-healthy",
        "touch /tmp/ready; sleep 2.5; rm /tmp/ready; exec sleep 600",
        1.0,
        2,
        30.0,
        6,
    ),
]


def _ts(value: str) -> float:
    """Docker's RFC 3339 timestamp (nanoseconds, ``Z`` or an offset) as epoch seconds."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value)
    assert m is not None, value
    zone = "+00:00" if m[3] == "Z" else m[3]
    base = dt.datetime.fromisoformat(m[1] + zone).timestamp()
    return base + (float("0." + m[2]) if m[2] else 0.0)


@dataclass
class Watch:
    case: Case
    cid: str
    started: float = 0.0
    probes: dict[float, tuple[float, int]] = field(default_factory=dict)  # start -> (end, exit)
    looks: list[tuple[float, str, int]] = field(
        default_factory=list
    )  # (newest start, status, streak)

    def look(self, engine: EngineHandle) -> None:
        status, body = _unix_request(engine.socket, "GET", f"/containers/{self.cid}/json", 30)
        assert status == 200, body[:200]
        state = json.loads(body)["State"]
        self.started = _ts(state["StartedAt"])
        health = state.get("Health") or {}
        log = health.get("Log") or []
        for entry in log:
            self.probes[_ts(entry["Start"])] = (_ts(entry["End"]), int(entry["ExitCode"]))
        if log:
            newest = max(_ts(e["Start"]) for e in log)
            self.looks.append((newest, str(health["Status"]), int(health["FailingStreak"])))

    def done(self) -> bool:
        return len(self.probes) >= self.case.probes


def _ours(w: Watch) -> dict[float, tuple[str, int, float]]:
    """Our evaluator over Docker's probes: start -> (status, streak, when it was due)."""
    c = w.case
    spec = ProbeSpec("exec", c.interval, 30.0, c.retries, c.start_period)
    state = HealthState()
    out: dict[float, tuple[str, int, float]] = {}
    for start in sorted(w.probes):
        end, code = w.probes[start]
        due_at = next_due(state, spec, 0.0)
        state = evaluate(
            state, ProbeResult(code == 0, start - w.started, done=end - w.started), spec, 0.0
        )
        out[start] = (state.status, state.failing_streak, due_at)
    return out


def test_our_health_evaluation_matches_dockers(
    docker_engine: EngineHandle, registry: Registry
) -> None:
    image = registry.ref(IMAGE)
    run_cli(docker_engine, "pull", image)
    watches: list[Watch] = []
    for c in CASES:
        cid = run_cli(
            docker_engine,
            "run",
            "-d",
            "--network",
            "none",
            "--label",
            "sbtest.owner=health-docker",
            "--health-cmd",
            "test -f /tmp/ready",
            "--health-interval",
            f"{c.interval:g}s",
            "--health-timeout",
            "5s",
            "--health-retries",
            str(c.retries),
            "--health-start-period",
            f"{c.start_period:g}s",
            image,
            "sh",
            "-c",
            c.script,
        ).strip()
        watches.append(Watch(c, cid))
    for _ in range(LOOKS_MAX):
        for w in watches:
            if not w.done():
                w.look(docker_engine)
        if all(w.done() for w in watches):
            break
        time.sleep(0.1)
    for w in watches:
        assert w.done(), f"{w.case.name}: Docker ran only {len(w.probes)} probes"
        ours = _ours(w)
        starts = sorted(w.probes)
        # Timing: Docker never probed before our schedule says a probe is due ...
        for start in starts:
            assert start - w.started >= ours[start][2] - SLACK, (w.case.name, start, ours)
        # ... and our first probe is not an interval early (it was due at t=0 before).
        if w.case.interval >= 2.0:
            assert starts[0] - w.started - ours[starts[0]][2] < w.case.interval, ours
        # Evaluation: after every probe Docker reported, the same status and streak.
        for newest, status, streak in w.looks:
            if newest in ours:
                assert ours[newest][:2] == (status, streak), (w.case.name, w.looks, ours)
        print(f"{w.case.name}: {[(round(s - w.started, 2), ours[s][:2]) for s in starts]}")
    # What each case is about, on Docker's own run.
    by = {w.case.name: [_ours(w)[s][0] for s in sorted(w.probes)] for w in watches}
    assert "unhealthy" not in by["slow-starter"] and by["slow-starter"][-1] == "healthy"
    assert "unhealthy" in by["recovers"] and by["recovers"][-1] == "healthy"
    assert "unhealthy" not in by["start-period"] and by["start-period"][-1] == "healthy"
    assert by["fails-after-healthy"][0] == "healthy" and "unhealthy" in by["fails-after-healthy"]
