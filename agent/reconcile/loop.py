"""The reconcile loop: observe, plan, execute, then hold the new version to its health window.

Triggers (coalesced into one run): a desired-state change (``trigger()`` or a changed
revision seen on the next poll), container events from the engine, a timer, and start-up.
Nothing is kept only in memory that a restart needs: the deployment rows in the store say
which revision failed, and the engine's labelled containers say what runs. On start the
loop re-observes and re-plans, so a run cut off by ``kill -9`` is finished by the next one.

Every deployment belongs to one exact desired revision (``agent.precedence.Revision``:
source, generation, spec hash). A local override and the hub's next revision may carry the
same generation; they never share a deployment.

Rollback happens on the device, with no network: a revision not healthy within
``update.health_window`` (or crash-looping) is marked ``rolled_back`` and the loop converges
to the deployment most recently written healthy, whose images the pruner always keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.errors import AgentError, DiskFull, EngineError, EngineUnavailable
from agent.precedence import Revision, revision_of
from agent.reconcile.executor import Executor, ExecutorOptions, RunResult
from agent.reconcile.gates import Decision, GatePort
from agent.reconcile.health import (
    HealthState,
    ProbeSpec,
    Verdict,
    due,
    evaluate,
    gate,
    next_due,
    probe_for,
    run_probe,
)
from agent.reconcile.plan import Plan, Readiness, Target, Wait, plan
from agent.reconcile.ports import Deployment, Recorder
from agent.runtime.base import Engine, ObservedContainer
from bundles import BundleError, from_dict
from bundles.model import BundleSpec
from protocol.desired import DesiredState
from sbutil.text import plural

log = logging.getLogger(__name__)

DesiredProvider = Callable[[], "DesiredState | Awaitable[DesiredState | None] | None"]
Outcome = Literal["succeeded", "failed", "noop", "waiting", "held", "deferred"]


@dataclass(frozen=True)
class LoopOptions:
    interval: float = 60.0  # timer trigger
    poll: float = 1.0  # how often to look for a new generation and run due probes
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


@dataclass
class _Gate:
    """A deployment being held to its health window (in memory; restarts open a new one)."""

    revision: Revision  # the deployment this gate decides
    target: Target
    deadline: float
    window: float
    rollback_of: Revision | None  # set when this gate watches a rollback
    opened_wall: float = field(default_factory=time.time)
    baseline_restarts: dict[str, int] = field(default_factory=dict)
    crashes: dict[str, int] = field(default_factory=dict)

    @property
    def generation(self) -> int:
        return self.revision.generation


class ReconcileLoop:
    def __init__(
        self,
        engine: Engine,
        recorder: Recorder,
        desired_provider: DesiredProvider,
        device_id: str,
        options: LoopOptions | None = None,
        update_gate: GatePort | None = None,
    ) -> None:
        self.engine = engine
        self.update_gate = update_gate  # update locks and maintenance windows; None: none
        self.recorder = recorder
        self.desired_provider = desired_provider
        self.device_id = device_id
        if not device_id:
            raise ValueError("device_id must not be empty")
        self.options = options or LoopOptions()
        self.executor = Executor(engine, recorder, device_id, self.options.executor)
        self.last_result: LoopResult | None = None
        self._extra = {"device": device_id}
        self._wake = asyncio.Event()
        self._reasons: set[str] = set()
        self._stopping = False
        self._gate: _Gate | None = None
        self._health: dict[str, HealthState] = {}  # by container id
        self._probes: dict[str, ProbeSpec | None] = {}  # by container id
        self._started_mono: dict[str, float] = {}  # container id -> monotonic first-seen running
        self._last_revision: Revision | None = None
        self._apply_failures: dict[Revision, int] = {}
        self._seen_images: set[str] = set()
        self._target: Target | None = None
        self._next_timer = 0.0
        self._retry_at: float | None = None
        self._events_task: asyncio.Task[None] | None = None
        self._busy = False
        self._started_wall = time.time()
        self._next_probe_at = 0.0  # monotonic; 0 = look at the containers on the next tick
        # depends_on: what the last plan held back, and the containers' states and health
        # verdicts at the last health tick; a change while something waits means plan again.
        self._waiting: tuple[Wait, ...] = ()
        self._ready_sig: object = None
        # Update gate: the revision last allowed to start (a deferred one is not), and the
        # deferral in force, re-checked every poll (cheap: no engine call) until it lifts.
        self._started_revision: Revision | None = None
        self._deferred: Decision | None = None

    # -- public ---------------------------------------------------------------------------
    def trigger(self, reason: str = "manual") -> None:
        """Ask for a run soon; several triggers before it starts become one run."""
        self._reasons.add(reason)
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Run until ``stop()``; never raises for engine trouble (it retries)."""
        self._events_task = asyncio.create_task(self._watch_events())
        self.trigger("start")
        try:
            while not self._stopping:
                await self._sleep_until_next()
                if self._stopping:
                    break
                reasons = self._take_reasons()
                if reasons:
                    await self._safe_reconcile(",".join(sorted(reasons)))
                await self._safe_health_tick()
        finally:
            if self._events_task is not None:
                self._events_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._events_task

    async def reconcile_once(self, trigger: str = "manual") -> LoopResult:
        """One observe-plan-execute run; it answers every trigger asked for before it."""
        self._reasons.clear()
        self._wake.clear()
        result = await self._reconcile(trigger)
        self.last_result = result
        return result

    async def health_tick(self) -> Verdict | None:
        """Run due probes; decide the open health gate if any. Returns the gate's verdict."""
        return await self._health_tick()

    @property
    def gate_open(self) -> bool:
        return self._gate is not None

    @property
    def idle(self) -> bool:
        """Nothing running, nothing asked for, no health window open: converged for now."""
        return (
            not self._busy and not self._reasons and self._gate is None and self._retry_at is None
        )

    # -- scheduling -----------------------------------------------------------------------
    def _take_reasons(self) -> set[str]:
        now = time.monotonic()
        reasons, self._reasons = self._reasons, set()
        self._wake.clear()
        if now >= self._next_timer:
            reasons.add("timer")
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            reasons.add("retry")
        return reasons

    async def _sleep_until_next(self) -> None:
        timeout = max(0.0, min(self.options.poll, self._next_timer - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        if self._wake.is_set() and self.options.debounce > 0 and not self._stopping:
            await asyncio.sleep(self.options.debounce)
        rev = await self._desired_revision()
        if rev is not None and rev != self._last_revision:
            self._reasons.add("desired")
        elif self._deferred is not None and await self._gate_lifted():
            self._reasons.add("gate")

    async def _desired(self) -> DesiredState | None:
        value = self.desired_provider()
        if inspect.isawaitable(value):
            value = await value
        return value

    async def _desired_revision(self) -> Revision | None:
        try:
            d = await self._desired()
        except Exception:  # a provider failure must not stop the loop
            log.exception("desired-state provider failed", extra=self._extra)
            return None
        return revision_of(d) if d is not None else None

    async def _safe_reconcile(self, trigger: str) -> None:
        try:
            self._busy = True
            await self.reconcile_once(trigger)
        except EngineUnavailable as exc:
            self._fail_result(trigger, f"engine unavailable: {exc}")
        except Exception as exc:  # the loop must survive anything one run throws
            log.exception("reconcile run failed", extra=self._extra)
            self._fail_result(trigger, f"{type(exc).__name__}: {exc}")
        finally:
            self._busy = False

    def _fail_result(self, trigger: str, reason: str) -> None:
        self._retry_at = time.monotonic() + self.options.error_backoff
        self.last_result = LoopResult(
            time.time(),
            trigger,
            None if self._last_revision is None else self._last_revision.generation,
            None,
            "failed",
            reason,
        )
        log.warning("reconcile failed: %s", reason, extra=self._extra)

    async def _safe_health_tick(self) -> None:
        try:
            await self._health_tick()
        except EngineError as exc:
            log.warning("health tick: %s", exc, extra=self._extra)
        except Exception:
            log.exception("health tick failed", extra=self._extra)

    async def _watch_events(self) -> None:
        """Engine container events: unexpected exits are recorded and trigger a run."""
        while not self._stopping:
            try:
                async for ev in self.engine.events():
                    if ev.action == "die":
                        self._on_exit(ev.service, ev.attributes, ev.time)
                        self.trigger("engine")
                    elif ev.action in ("destroy", "oom", "kill"):
                        self.trigger("engine")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("engine event stream ended: %s", exc, extra=self._extra)
            await asyncio.sleep(self.options.error_backoff)

    def _on_exit(self, service: str | None, attrs: dict[str, str], when: float) -> None:
        target = self._target
        if target is None or service is None or when < self._started_wall - 1.0:
            return  # an engine replaying history: not news
        want = next((s for s in target.services if s.service == service), None)
        if want is None or attrs.get("io.signalbeam.spec-hash") != want.spec_hash:
            return  # one of ours we stopped on purpose (old version, duplicate)
        code = attrs.get("exitCode") or attrs.get("containerExitCode") or "?"
        self.recorder.event(
            "container.exited",
            f"{service} exited with code {code}",
            severity="warning" if code not in ("0", "?") else "info",
            data={"service": service, "exit_code": code},
        )
        if self._gate is not None and code != "0" and when >= self._gate.opened_wall - 1.0:
            self._gate.crashes[service] = self._gate.crashes.get(service, 0) + 1

    # -- one run --------------------------------------------------------------------------
    async def _choose_target(
        self, desired: DesiredState
    ) -> tuple[Target | None, Revision | None, str | None]:
        """(target, the revision whose deployment it runs, why it is held if None).

        The deployment is looked up by the exact revision (source, generation, spec hash):
        one recorded for another revision under the same number is never reused."""
        rev = revision_of(desired)
        gen = rev.generation
        dep = self.recorder.deployment(rev)
        if dep is None:
            data = {"generation": gen, "source": rev.source}
            if desired.spec is None:
                self.recorder.deployment_begin(rev, None, None)
            else:
                try:
                    spec = from_dict(desired.spec)
                except BundleError as exc:
                    self.recorder.deployment_begin(rev, _ref(desired.spec), desired.spec)
                    reason = f"desired bundle is invalid: {exc}"
                    self.recorder.deployment_set(rev, "failed", reason)
                    self.recorder.event("reconcile.failed", reason, severity="error", data=data)
                    return await self._choose_target(desired)
                self.recorder.deployment_begin(rev, spec.ref, desired.spec)
            self.recorder.event(
                "deployment.started",
                f"applying {rev.describe()}: {_ref(desired.spec) or 'no bundle'}",
                data={**data, "bundle": _ref(desired.spec)},
            )
            dep = self.recorder.deployment(rev)
        assert dep is not None
        if dep.status in ("applying", "healthy"):
            return _target_of(dep), rev, None
        prev = self.recorder.last_healthy_deployment(other_than=rev)
        if prev is None:
            return (
                None,
                None,
                (
                    f"{rev.describe()} {dep.status} ({dep.reason}); "
                    "no earlier healthy deployment to roll back to"
                ),
            )
        return _target_of(prev), prev.revision, None

    async def _reconcile(self, trigger: str) -> LoopResult:
        now_wall = time.time()
        self._next_timer = time.monotonic() + self.options.interval
        desired = await self._desired()
        if desired is None:
            return LoopResult(now_wall, trigger, None, None, "noop", "no desired state yet")
        rev = revision_of(desired)
        gen = rev.generation
        self._last_revision = rev
        self._deferred = self._gate_start(desired, rev)
        if self._deferred is not None:
            return await self._converge_deferred(trigger, desired, self._deferred)
        if rev != self._started_revision:
            self._started_revision = rev
            old = self._gate
            self._gate = None  # a newer revision supersedes whatever was being watched
            if old is not None and old.rollback_of is None and old.revision != rev:
                # Say so, or a rollout waiting on that generation would wait forever.
                self.recorder.deployment_set(
                    old.revision,
                    "failed",
                    f"superseded by {rev.describe()} before it was healthy",
                )
        target, dep_rev, held = await self._choose_target(desired)
        if target is None or dep_rev is None:
            self._target = None
            return LoopResult(now_wall, trigger, gen, None, "held", held)
        self._target = target
        self._seen_images.update(target.images)
        ref = f"{target.bundle}@{target.version}" if target.bundle else None

        self._next_probe_at = 0.0  # containers may change: look again on the next tick
        observed = await self.engine.list_containers()
        images = {t for i in await self.engine.list_images() for t in i.tags}
        p = plan(target, observed, images, device_id=self.device_id, health=self._readiness())
        self._waiting = p.waiting
        noops = tuple(n.to_dict() for n in p.noops)
        result: RunResult | None = None
        if not p.empty:
            run_id = self.recorder.journal_begin(gen, trigger, p.to_dicts())
            result = await self.executor.run(p, target, run_id)
            self.recorder.journal_end(run_id, "succeeded" if result.ok else "failed", result.reason)
            observed = await self.engine.list_containers()
            if p.waiting:
                self.trigger("depends_on")  # what this run started may be what they wait for
        self._save_observed(observed)

        dep = self.recorder.deployment(dep_rev)
        if result is not None and not result.ok:
            return self._apply_failed(trigger, rev, dep_rev, dep, target, p, result)
        if result is not None:
            self.recorder.event(
                "reconcile.succeeded",
                f"{ref or 'no bundle'}: {plural(len(p.steps), 'step')}",
                data={"generation": gen, "source": rev.source, "steps": len(p.steps),
                      "trigger": trigger},
            )  # fmt: skip
        rolling_back = dep_rev != rev
        latest = self.recorder.latest_deployment()
        reported = latest is not None and latest.revision == dep_rev
        if dep is not None and not rolling_back:
            if dep.status == "applying":
                self._open_gate(dep_rev, target, observed, rollback_of=None)
            elif dep.status == "healthy" and not reported:
                # Back to a revision that ran healthy before (an override was cleared, say):
                # the containers were replaced since, so it is held to its window again, and
                # its row is written again so the device reports it, not the one before.
                self.recorder.deployment_set(dep_rev, "applying", None)
                self._open_gate(dep_rev, target, observed, rollback_of=None)
        elif rolling_back and not reported:
            # Watch the rollback until its target is the deployment the device reports;
            # afterwards it is the steady state until a new revision.
            self._open_gate(dep_rev, target, observed, rollback_of=rev)
        outcome: Outcome = "noop" if p.empty else "succeeded"
        if self._gate is not None:
            outcome = "waiting"
        return LoopResult(
            now_wall, trigger, gen, ref, outcome,
            "waiting for health" if outcome == "waiting" else None,
            len(p.steps), noops,
        )  # fmt: skip

    # -- update gate (locks, maintenance windows) ------------------------------------------
    def _gate_start(self, desired: DesiredState, rev: Revision) -> Decision | None:
        """The deferral, if this revision may not start now; None when it may (or began
        already: only the start is gated, and rollbacks never pass here, they return to a
        deployment that exists)."""
        if self.update_gate is None or self.recorder.deployment(rev) is not None:
            return None
        spec = None
        if desired.spec is not None:
            with contextlib.suppress(BundleError):  # invalid: let it start and fail
                spec = from_dict(desired.spec)
        decision = self.update_gate.check(desired, spec)
        self.update_gate.note(desired, decision)
        return None if decision.allow else decision

    async def _gate_lifted(self) -> bool:
        desired = await self._desired()
        if desired is None or self.update_gate is None:
            return True
        spec = None
        if desired.spec is not None:
            with contextlib.suppress(BundleError):
                spec = from_dict(desired.spec)
        try:
            return self.update_gate.check(desired, spec).allow
        except Exception:
            log.exception("update gate check failed", extra=self._extra)
            return False

    async def _converge_deferred(
        self, trigger: str, desired: DesiredState, deferred: Decision
    ) -> LoopResult:
        """Keep running what runs (its containers restarted if they stop) while the new
        revision waits; the health window of one still being watched goes on."""
        now_wall = time.time()
        gen = desired.generation
        reason = deferred.describe()
        dep = self.recorder.latest_deployment()
        if dep is None or dep.status not in ("applying", "healthy"):
            dep = self.recorder.last_healthy_deployment()
        if dep is None:
            self._target = None
            return LoopResult(now_wall, trigger, gen, None, "deferred", reason)
        target = _target_of(dep)
        self._target = target
        observed = await self.engine.list_containers()
        images = {t for i in await self.engine.list_images() for t in i.tags}
        p = plan(target, observed, images, device_id=self.device_id, health=self._readiness())
        if not p.empty:
            run_id = self.recorder.journal_begin(dep.generation, trigger, p.to_dicts())
            result = await self.executor.run(p, target, run_id)
            self.recorder.journal_end(run_id, "succeeded" if result.ok else "failed", result.reason)
            observed = await self.engine.list_containers()
        self._save_observed(observed)
        ref = f"{target.bundle}@{target.version}" if target.bundle else None
        return LoopResult(now_wall, trigger, gen, ref, "deferred", reason, len(p.steps))

    def _apply_failed(
        self,
        trigger: str,
        rev: Revision,
        dep_rev: Revision,
        dep: Deployment | None,
        target: Target,
        p: Plan,
        result: RunResult,
    ) -> LoopResult:
        reason = result.reason or "a step failed"
        self.recorder.event(
            "reconcile.failed",
            reason,
            severity="error",
            data={"generation": rev.generation, "source": rev.source},
        )
        ref = f"{target.bundle}@{target.version}" if target.bundle else None
        failed = result.failed_step
        pull_failed = failed is not None and failed.action == "pull"
        disk = result.disk_full
        # Neither a lost engine nor a failed pull (no network yet) says the bundle is bad.
        benign = result.engine_down or (pull_failed and not disk)
        count = self._apply_failures.get(rev, 0) + (0 if benign else 1)
        self._apply_failures[rev] = count
        destructive = target.strategy == "kill-then-download"
        give_up = disk or count >= self.options.max_apply_failures or (pull_failed and destructive)
        if dep_rev == rev and dep is not None and dep.status == "applying" and give_up:
            self._fail_generation(rev, reason)
            self.trigger("rollback")
        else:
            self._retry_at = time.monotonic() + self.options.error_backoff
        return LoopResult(time.time(), trigger, rev.generation, ref, "failed", reason, len(p.steps))

    def _fail_generation(self, rev: Revision, reason: str) -> None:
        prev = self.recorder.last_healthy_deployment(other_than=rev)
        gen = rev.generation
        if prev is None:
            self.recorder.deployment_set(rev, "failed", reason)
            self.recorder.event(
                "deployment.failed",
                f"{rev.describe()} failed: {reason}; nothing healthy to roll back to",
                severity="error",
                data={"generation": gen, "source": rev.source, "reason": reason},
            )
            return
        self.recorder.deployment_set(rev, "rolled_back", reason)
        self.recorder.event(
            "rollback",
            f"{rev.describe()} failed ({reason}); rolling back to {prev.bundle_ref} "
            f"({prev.revision.describe()})",
            severity="error",
            data={"generation": gen, "source": rev.source, "to_generation": prev.generation,
                  "to_source": prev.source, "to": prev.bundle_ref, "reason": reason},
        )  # fmt: skip

    def _save_observed(self, observed: list[ObservedContainer]) -> None:
        rows = []
        for c in observed:
            row = c.to_dict()
            h = self._health.get(c.id)
            if h is not None:
                row["health"] = h.status
            rows.append(row)
        self.recorder.save_observed(rows)

    # -- health ---------------------------------------------------------------------------
    def _open_gate(
        self,
        dep_rev: Revision,
        target: Target,
        observed: list[ObservedContainer],
        rollback_of: Revision | None,
    ) -> None:
        if self._gate is not None and self._gate.revision == dep_rev:
            return
        window = self.options.health_window
        if window is None:
            window = _window_of(self.recorder.deployment(dep_rev))
        hashes = {s.service: s.spec_hash for s in target.services}
        self._gate = _Gate(
            revision=dep_rev,
            target=target,
            deadline=time.monotonic() + window,
            window=window,
            rollback_of=rollback_of,
            baseline_restarts={
                c.service: c.restart_count for c in observed if hashes.get(c.service) == c.spec_hash
            },
        )
        log.info("health window of %.0fs opened for %s", window, dep_rev.describe(),
                 extra=self._extra)  # fmt: skip

    async def _health_tick(self) -> Verdict | None:
        target = self._target
        if target is None:
            return None
        if self._gate is None and time.monotonic() < self._next_probe_at:
            return None  # steady state and no probe due: do not even list containers
        observed = await self.engine.list_containers()
        hashes = {s.service: s for s in target.services}
        current: dict[str, ObservedContainer | None] = {s: None for s in hashes}
        now = time.monotonic()
        live_ids: set[str] = set()
        for c in observed:
            want = hashes.get(c.service)
            if want is None or want.spec_hash != c.spec_hash:
                continue
            prev = current.get(c.service)
            if prev is None or c.state == "running":
                current[c.service] = c
        for cur in current.values():
            if cur is None:
                continue
            live_ids.add(cur.id)
            if cur.state == "running":
                self._started_mono.setdefault(cur.id, now)
            else:
                self._started_mono.pop(cur.id, None)
        for gone in set(self._health) - live_ids:
            self._health.pop(gone, None)
            self._probes.pop(gone, None)
        await asyncio.gather(
            *(self._probe(c, hashes[s].spec, now) for s, c in current.items() if c is not None)
        )
        # Sleep the health tick until the earliest probe is due (or the timer, with none).
        next_at = now + self.options.interval
        for svc_c in current.values():
            probe = self._probes.get(svc_c.id) if svc_c is not None else None
            if svc_c is not None and probe is not None:
                state = self._health.get(svc_c.id) or HealthState()
                started = self._started_mono.get(svc_c.id, now)
                next_at = min(next_at, next_due(state, probe, started))
        self._next_probe_at = next_at
        sig = (
            sorted((s, c.id, c.state) for s, c in current.items() if c is not None),
            sorted(self._readiness().items()),
        )
        if self._waiting and sig != self._ready_sig:
            self.trigger("depends_on")  # a dependency may be ready now: plan again
        self._ready_sig = sig
        gate_ = self._gate
        if gate_ is None:
            return None
        health = {
            s: (self._health.get(c.id) if c is not None and self._probes.get(c.id) else None)
            for s, c in current.items()
        }
        crashes = {
            s: max(
                gate_.crashes.get(s, 0),
                (c.restart_count - gate_.baseline_restarts.get(s, 0)) if c is not None else 0,
            )
            for s, c in current.items()
        }
        verdict = gate(
            list(hashes),
            current,
            health,
            crashes,
            now=time.monotonic(),
            deadline=gate_.deadline,
            running_since={
                s: self._started_mono[c.id]
                for s, c in current.items()
                if c is not None and c.id in self._started_mono
            },
            min_uptime=self.options.min_uptime,
            crash_limit=self.options.crash_limit,
            window=gate_.window,
            waiting={w.service: w.reason for w in self._waiting},
        )
        if verdict.decision == "wait":
            return verdict
        self._gate = None
        back = gate_.rollback_of
        if verdict.decision == "healthy":
            self.recorder.deployment_set(gate_.revision, "healthy", None)
            self.recorder.event(
                "deployment.healthy",
                (f"{target.bundle}@{target.version}" if target.bundle else "no bundle")
                + f" ({gate_.revision.describe()}) is healthy"
                + (f" after rolling back from {back.describe()}" if back is not None else ""),
                data={"generation": gate_.generation, "source": gate_.revision.source,
                      "rollback_of": None if back is None else back.generation},
            )  # fmt: skip
            if self.options.prune:
                await self._prune(gate_.revision)
        elif back is None:
            self._fail_generation(gate_.revision, verdict.reason)
            self.trigger("rollback")
        else:
            # The rollback target failed too: mark it, and the next run goes further back or holds.
            self.recorder.deployment_set(gate_.revision, "failed", verdict.reason)
            self.recorder.event(
                "rollback.failed",
                f"rollback to {gate_.revision.describe()} is not healthy: {verdict.reason}",
                severity="error",
                data={"generation": gate_.generation, "source": gate_.revision.source,
                      "reason": verdict.reason},
            )  # fmt: skip
            self.trigger("rollback")
        if self.last_result is not None:
            self.last_result = LoopResult(
                time.time(), self.last_result.trigger, self.last_result.generation,
                self.last_result.target,
                "succeeded" if verdict.decision == "healthy" else "failed",
                verdict.reason, self.last_result.steps, self.last_result.noops,
            )  # fmt: skip
        return verdict

    def _readiness(self) -> dict[str, Readiness]:
        """The health verdict per container id that ``service_healthy`` dependencies need."""
        return {
            cid: "none" if probe is None else self._health.get(cid, HealthState()).status
            for cid, probe in self._probes.items()
        }

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
        if not due(state, probe, now, started_at=self._started_mono.get(c.id, now)):
            return
        res = await run_probe(self.engine, c, probe, now)
        new = evaluate(state, res, probe, self._started_mono.get(c.id, now))
        self._health[c.id] = new
        # Only transitions into or out of "unhealthy" are worth an event.
        if new.status != state.status and "unhealthy" in (new.status, state.status):
            self.recorder.event(
                f"container.{new.status}",
                f"{c.service} is {new.status}: {new.detail}",
                severity="warning" if new.status == "unhealthy" else "info",
                data={"service": c.service, "container": c.id, "detail": new.detail},
            )

    async def _prune(self, healthy: Revision) -> None:
        keep = set(self._target.images if self._target else ())
        prev = self.recorder.last_healthy_deployment(other_than=healthy)
        if prev is not None:
            keep |= set(_target_of(prev).images)
        try:
            await self.executor.prune(keep, self._seen_images)
        except AgentError as exc:
            log.warning("prune: %s", exc, extra=self._extra)


def _ref(spec: dict[str, Any] | None) -> str | None:
    if not spec:
        return None
    return f"{spec.get('bundle')}@{spec.get('version')}"


def _spec_of(dep: Deployment) -> BundleSpec | None:
    return from_dict(dep.spec) if dep.spec is not None else None


def _target_of(dep: Deployment) -> Target:
    return Target.from_spec(_spec_of(dep))


def _window_of(dep: Deployment | None) -> float:
    if dep is None or dep.spec is None:
        return 0.0
    spec = _spec_of(dep)
    return spec.update.health_window if spec is not None else 0.0


__all__ = ["DiskFull", "LoopOptions", "LoopResult", "ReconcileLoop"]
