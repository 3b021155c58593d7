"""The reconcile loop: observe, plan, execute, gate, apply.

One run observes (the desired revision, its deployment, the containers and images), asks
the deployment lifecycle (``agent.reconcile.lifecycle``, pure) which deployment to converge
to, plans the steps (``agent.reconcile.plan``, pure), executes them (``executor``), and
applies what the lifecycle answers: rows, events, the health watch. Between runs the health
tick probes the containers (``monitor``) and the gate (``health.gate``, pure) judges the
watched deployment; the lifecycle turns its verdict into a status.

Triggers (coalesced into one run): a desired-state change (``trigger()``, called by the one
detector of a change, ``agent.desired_watch``, or by the local API), container events from
the engine, an update gate lifting (re-checked every poll while one defers), a timer, and
start-up. The loop does not poll for a desired-state change itself; each run reads the
desired state afresh.
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

from agent.errors import AgentError, DiskFull, EngineError, EngineUnavailable
from agent.precedence import Revision, revision_of
from agent.reconcile import lifecycle as lc
from agent.reconcile.executor import Executor, RunResult, SecretLookup
from agent.reconcile.gates import Decision, GatePort
from agent.reconcile.health import Verdict, gate
from agent.reconcile.monitor import HealthMonitor
from agent.reconcile.options import LoopOptions, LoopResult, Outcome
from agent.reconcile.plan import Plan, Pull, Target, Wait, plan
from agent.reconcile.ports import Deployment, Recorder
from agent.runtime.base import Engine, ObservedContainer
from agent.secretbox import fingerprints
from bundles import BundleError, from_dict
from protocol.desired import DesiredState
from sbutil.tasks import cancel_and_wait, wait_for

log = logging.getLogger(__name__)

DesiredProvider = Callable[[], "DesiredState | Awaitable[DesiredState | None] | None"]


class ReconcileLoop:
    def __init__(
        self,
        engine: Engine,
        recorder: Recorder,
        desired_provider: DesiredProvider,
        device_id: str,
        options: LoopOptions | None = None,
        update_gate: GatePort | None = None,
        secrets: SecretLookup | None = None,
    ) -> None:
        self.engine = engine
        self.update_gate = update_gate  # update locks and maintenance windows; None: none
        self.recorder = recorder
        self.desired_provider = desired_provider
        self.device_id = device_id
        if not device_id:
            raise ValueError("device_id must not be empty")
        self.options = options or LoopOptions()
        self.executor = Executor(
            engine, recorder, device_id, self.options.executor, secrets=secrets
        )
        self.monitor = HealthMonitor(engine, recorder, self.options.interval)
        self.life = lc.Lifecycle()  # its revision: the one last allowed to start
        self._last_desired: Revision | None = None  # the one last seen, deferred or not
        self.last_result: LoopResult | None = None
        self._extra = {"device": device_id}
        self._wake = asyncio.Event()
        self._reasons: set[str] = set()
        self._stopping = False
        self._seen_images: set[str] = set()
        self._target: Target | None = None
        self._next_timer = 0.0
        self._retry_at: float | None = None
        self._events_task: asyncio.Task[None] | None = None
        self._busy = False
        self._started_wall = time.time()
        # depends_on: what the last plan held back, and the containers' states and health
        # verdicts at the last health tick; a change while something waits means plan again.
        self._waiting: tuple[Wait, ...] = ()
        self._ready_sig: object = None
        # The update gate's deferral in force, re-checked every poll (cheap: no engine call)
        # until it lifts.
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
            await cancel_and_wait([self._events_task])

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
        return self.life.watch is not None

    @property
    def idle(self) -> bool:
        """Nothing running, nothing asked for, no health window open: converged for now."""
        return (
            not self._busy
            and not self._reasons
            and self.life.watch is None
            and self._retry_at is None
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
            await wait_for(self._wake.wait(), timeout)
        if self._wake.is_set() and self.options.debounce > 0 and not self._stopping:
            await asyncio.sleep(self.options.debounce)
        if self._deferred is not None and await self._gate_lifted():
            self._reasons.add("gate")

    async def _desired(self) -> DesiredState | None:
        value = self.desired_provider()
        if inspect.isawaitable(value):
            value = await value
        return value

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
        rev = self._last_desired
        self.last_result = LoopResult(
            time.time(), trigger, None if rev is None else rev.generation, None, "failed", reason
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
        self._apply(
            lc.exited(self.life, self._target, service, attrs, when,
                      started_wall=self._started_wall)
        )  # fmt: skip

    # -- applying the lifecycle's answers -------------------------------------------------
    def _apply(self, change: lc.Change) -> None:
        """Record what a transition asks for, in order, then take its state."""
        self._record(change.records)
        self.life = change.state
        if change.trigger is not None:
            self.trigger(change.trigger)
        if change.retry:
            self._retry_at = time.monotonic() + self.options.error_backoff

    def _record(self, records: tuple[lc.Record, ...]) -> None:
        for r in records:
            if isinstance(r, lc.Begin):
                self.recorder.deployment_begin(r.revision, r.bundle_ref, r.spec)
            elif isinstance(r, lc.SetStatus):
                self.recorder.deployment_set(r.revision, r.status, r.reason)
            else:
                self.recorder.event(r.kind, r.message, severity=r.severity, data=dict(r.data))

    # -- one run: observe, plan, execute, gate, apply -------------------------------------
    async def _reconcile(self, trigger: str) -> LoopResult:
        now_wall = time.time()
        self._next_timer = time.monotonic() + self.options.interval
        desired = await self._desired()
        if desired is None:
            return LoopResult(now_wall, trigger, None, None, "noop", "no desired state yet")
        rev = self._last_desired = revision_of(desired)
        # observe: the desired revision's deployment, looked up by the exact revision (source,
        # generation, spec hash): one recorded for another revision under the same number is
        # never reused. An update gate (locks, windows) may defer only a revision not begun.
        dep = self.recorder.deployment(rev)
        self._deferred = self._gate_start(desired, dep)
        if self._deferred is not None:
            return await self._converge_deferred(trigger, rev, self._deferred)
        # plan: which deployment to converge to (the lifecycle), then the steps (the planner)
        self._apply(lc.desired(self.life, rev))
        choice = lc.choose(
            rev, desired.spec, dep, self.recorder.last_healthy_deployment(other_than=rev),
            (desired.variables or {}, fingerprints(desired)),
        )  # fmt: skip
        self._record(choice.records)
        target, dep_rev = choice.target, choice.deployment
        if target is None or dep_rev is None:
            self._target = None
            return LoopResult(now_wall, trigger, rev.generation, None, "held", choice.held)
        self._target = target
        self._seen_images.update(target.images)
        self.monitor.look_again()  # containers may change: look again on the next tick
        observed, p = await self._plan(target)
        self._waiting = p.waiting
        run = lc.Run(rev, dep_rev, target, trigger, len(p.steps))
        # execute
        result: RunResult | None = None
        if not p.empty:
            result, observed = await self._execute(p, target, rev.generation, trigger)
            if p.waiting:
                self.trigger("depends_on")  # what this run started may be what they wait for
        self._save_observed(observed)
        # gate and apply: the lifecycle says what the run means for the deployment (a health
        # window to open, a retry, a rollback), and the loop records it
        dep = self.recorder.deployment(dep_rev)
        if result is not None and not result.ok:
            return self._run_failed(run, p, dep, result)
        latest = self.recorder.latest_deployment()
        window = self.options.health_window
        change = lc.applied(
            self.life, run, dep,
            reported=latest is not None and latest.revision == dep_rev,
            observed=observed,
            window=lc.window_of(dep) if window is None else window,
            now=time.monotonic(),
            now_wall=time.time(),
        )  # fmt: skip
        opened = change.state.watch is not None and change.state.watch is not self.life.watch
        self._apply(change)
        if opened and self.life.watch is not None:
            log.info("health window of %.0fs opened for %s", self.life.watch.window,
                     dep_rev.describe(), extra=self._extra)  # fmt: skip
        outcome: Outcome = "noop" if p.empty else "succeeded"
        if self.life.watch is not None:
            outcome = "waiting"
        return LoopResult(
            now_wall, trigger, rev.generation, run.ref, outcome,
            "waiting for health" if outcome == "waiting" else None,
            len(p.steps), tuple(n.to_dict() for n in p.noops),
        )  # fmt: skip

    async def _plan(self, target: Target) -> tuple[list[ObservedContainer], Plan]:
        """Observe the containers and images; the steps that take them to ``target``."""
        observed = await self.engine.list_containers()
        images = {t for i in await self.engine.list_images() for t in i.tags}
        health = self.monitor.readiness(observed)
        return observed, plan(target, observed, images, device_id=self.device_id, health=health)

    async def _execute(
        self, p: Plan, target: Target, generation: int, trigger: str
    ) -> tuple[RunResult, list[ObservedContainer]]:
        """Run the plan's steps, journalled; returns the result and the containers after."""
        run_id = self.recorder.journal_begin(generation, trigger, p.to_dicts())
        result = await self.executor.run(p, target, run_id)
        self.recorder.journal_end(run_id, "succeeded" if result.ok else "failed", result.reason)
        return result, await self.engine.list_containers()

    # -- update gate (locks, maintenance windows) -----------------------------------------
    def _gate_check(self, desired: DesiredState) -> Decision:
        assert self.update_gate is not None
        spec = None
        if desired.spec is not None:
            with contextlib.suppress(BundleError):  # invalid: let it start and fail
                spec = from_dict(desired.spec)
        return self.update_gate.check(desired, spec)

    def _gate_start(self, desired: DesiredState, dep: Deployment | None) -> Decision | None:
        """The deferral, if this revision may not start now; None when it may. Only the
        start is gated (``lifecycle.gated``): never a revision begun, nor a rollback."""
        if self.update_gate is None or not lc.gated(dep):
            return None
        decision = self._gate_check(desired)
        self.update_gate.note(desired, decision)
        return None if decision.allow else decision

    async def _gate_lifted(self) -> bool:
        desired = await self._desired()
        if desired is None or self.update_gate is None:
            return True
        try:
            return self._gate_check(desired).allow
        except Exception:
            log.exception("update gate check failed", extra=self._extra)
            return False

    async def _converge_deferred(
        self, trigger: str, rev: Revision, deferred: Decision
    ) -> LoopResult:
        """Keep running what runs (its containers restarted if they stop) while the new
        revision waits; the health window of one still being watched goes on."""
        now_wall = time.time()
        reason = deferred.describe()
        dep = lc.in_force(
            self.recorder.latest_deployment(), self.recorder.last_healthy_deployment()
        )
        if dep is None:
            self._target = None
            return LoopResult(now_wall, trigger, rev.generation, None, "deferred", reason)
        target = self._target = lc.target_of(dep)
        observed, p = await self._plan(target)
        if not p.empty:
            _, observed = await self._execute(p, target, dep.generation, trigger)
        self._save_observed(observed)
        ref = f"{target.bundle}@{target.version}" if target.bundle else None
        return LoopResult(now_wall, trigger, rev.generation, ref, "deferred", reason,
                          len(p.steps))  # fmt: skip

    def _run_failed(
        self, run: lc.Run, p: Plan, dep: Deployment | None, result: RunResult
    ) -> LoopResult:
        failed = result.failed_step
        failure = lc.Failure(
            result.reason or "a step failed",
            pull_failed=isinstance(failed, Pull),
            disk_full=result.disk_full,
            engine_down=result.engine_down,
        )
        last_healthy = self.recorder.last_healthy_deployment(other_than=run.desired)
        self._apply(
            lc.run_failed(self.life, run, dep, failure, last_healthy,
                          max_failures=self.options.max_apply_failures)
        )  # fmt: skip
        return LoopResult(time.time(), run.trigger, run.desired.generation, run.ref, "failed",
                          failure.reason, len(p.steps))  # fmt: skip

    def _save_observed(self, observed: list[ObservedContainer]) -> None:
        rows = []
        for c in observed:
            row = c.to_dict()
            status = self.monitor.status_of(c.id)
            if status is not None:
                row["health"] = status
            rows.append(row)
        self.recorder.save_observed(rows)

    # -- health ---------------------------------------------------------------------------
    async def _health_tick(self) -> Verdict | None:
        target = self._target
        if target is None:
            return None
        watch = self.life.watch
        if watch is None and not self.monitor.due(time.monotonic()):
            return None  # steady state and no probe due: do not even list containers
        observed = await self.engine.list_containers()
        snap = await self.monitor.tick(target, observed, time.monotonic())
        sig = snap.signature(self.monitor.readiness(observed))
        if self._waiting and sig != self._ready_sig:
            self.trigger("depends_on")  # a dependency may be ready now: plan again
        self._ready_sig = sig
        watch = self.life.watch
        if watch is None:
            return None
        verdict = gate(
            [s.service for s in target.services],
            snap.current,
            snap.health,
            lc.crashes(watch, snap.current),
            now=time.monotonic(),
            deadline=watch.deadline,
            running_since=snap.running_since,
            min_uptime=self.options.min_uptime,
            crash_limit=self.options.crash_limit,
            window=watch.window,
            waiting={w.service: w.reason for w in self._waiting},
        )
        if verdict.decision == "wait":
            return verdict
        last_healthy = None
        if verdict.decision == "failed" and watch.rollback_of is None:
            last_healthy = self.recorder.last_healthy_deployment(other_than=watch.revision)
        change = lc.judged(self.life, verdict, last_healthy)
        self._apply(change)
        if change.prune is not None and self.options.prune:
            await self._prune(change.prune)
        if self.last_result is not None:
            self.last_result = LoopResult(
                time.time(), self.last_result.trigger, self.last_result.generation,
                self.last_result.target,
                "succeeded" if verdict.decision == "healthy" else "failed",
                verdict.reason, self.last_result.steps, self.last_result.noops,
            )  # fmt: skip
        return verdict

    async def _prune(self, healthy: Revision) -> None:
        keep = set(self._target.images if self._target else ())
        prev = self.recorder.last_healthy_deployment(other_than=healthy)
        if prev is not None:
            keep |= set(lc.target_of(prev).images)
        try:
            await self.executor.prune(keep, self._seen_images)
        except AgentError as exc:
            log.warning("prune: %s", exc, extra=self._extra)


__all__ = ["DiskFull", "LoopOptions", "LoopResult", "ReconcileLoop"]
