"""Runs a plan's steps against the engine: timeouts, bounded retries, journal, events.

Each step type of the plan has one executor function (``EXECUTORS``), which takes exactly
that type: a step's arguments are checked by its type, not by asserts in the executor.

Each step is written to the journal before and after it runs. Every step is idempotent
against the engine (a create finds its container by its deterministic name, a remove of a
missing container succeeds), so a run cut off anywhere is finished by the next plan.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from agent.errors import DiskFull, EngineError, EngineUnavailable, PullError
from agent.reconcile.plan import (
    Create,
    Plan,
    Pull,
    Recreate,
    Remove,
    Start,
    Step,
    Stop,
    Target,
)
from agent.reconcile.ports import Recorder
from agent.reconcile.requests import create_request
from agent.runtime.base import Engine, ImageInfo, PullProgress, RegistryAuth
from bundles.variables import VariableError, open_secrets

log = logging.getLogger(__name__)

DEFAULT_TIMEOUTS: dict[str, float] = {
    "pull": 900.0,
    "create": 60.0,
    "start": 60.0,
    "stop": 60.0,
    "remove": 60.0,
    "recreate": 180.0,
}


@dataclass(frozen=True)
class ExecutorOptions:
    timeouts: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    retries: int = 2  # extra attempts after the first
    backoff: float = 0.5  # first retry delay; doubles, capped at backoff_max
    backoff_max: float = 10.0
    stop_timeout: float = 10.0  # grace before the engine kills a stopping container
    min_free_bytes: int = 0  # disk to leave free on the engine's data root after pulls
    # Bytes that the images of the target and of this device's existing containers (kept for
    # rollback) may take together; None: only free disk limits pulls.
    image_budget: int | None = None
    default_image_estimate: int = 0  # pull size guess when no image of that repo is present
    progress_interval: float = 5.0  # at most one pull-progress event per image per interval
    registry_auth: Mapping[str, RegistryAuth] = field(default_factory=dict)  # host -> auth

    def __post_init__(self) -> None:
        checks = {
            "retries": self.retries >= 0,
            "backoff": self.backoff >= 0,
            "backoff_max": self.backoff_max >= 0,
            "stop_timeout": self.stop_timeout >= 0,
            "min_free_bytes": self.min_free_bytes >= 0,
            "image_budget": self.image_budget is None or self.image_budget >= 0,
            "default_image_estimate": self.default_image_estimate >= 0,
            "progress_interval": self.progress_interval >= 0,
            "timeouts": all(v > 0 for v in self.timeouts.values()),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"ExecutorOptions: {', '.join(bad)} must not be negative (timeouts > 0)"
            )

    def timeout(self, action: str) -> float:
        return float(self.timeouts.get(action, DEFAULT_TIMEOUTS.get(action, 60.0)))


@dataclass(frozen=True)
class RunResult:
    ok: bool
    reason: str | None = None
    failed_step: Step | None = None
    steps_done: int = 0
    disk_full: bool = False  # refused by disk admission: retrying will not help
    engine_down: bool = False  # the engine stopped answering: says nothing about the bundle


def repository(image: str) -> str:
    """``host:5000/a/b:tag`` -> ``host:5000/a/b`` (digest and tag stripped)."""
    name = image.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[:colon] if colon > slash else name


_CONCURRENT = frozenset({"create", "start"})


def _groups(steps: list[Step]) -> list[list[tuple[int, Step]]]:
    """Runs of consecutive create (or start) steps; every other step alone."""
    out: list[list[tuple[int, Step]]] = []
    for index, step in enumerate(steps):
        if out and step.action in _CONCURRENT and out[-1][0][1].action == step.action:
            out[-1].append((index, step))
        else:
            out.append([(index, step)])
    return out


SecretLookup = Callable[[str, str], "str | None"]


class Executor:
    def __init__(
        self,
        engine: Engine,
        recorder: Recorder,
        device_id: str,
        options: ExecutorOptions | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        secrets: SecretLookup | None = None,
    ) -> None:
        self.engine = engine
        # (name, fingerprint) -> the secret's value, or None: not held (agent.secretbox).
        self.secrets = secrets
        self.recorder = recorder
        self.device_id = device_id
        self.options = options or ExecutorOptions()
        self._sleep = sleep
        self._clock = clock
        self._log_extra = {"device": device_id}

    def _event(self, kind: str, message: str, severity: str = "info", **data: Any) -> None:
        self.recorder.event(kind, message, severity=severity, data=data)  # type: ignore[arg-type]
        level = {"warning": logging.WARNING, "error": logging.ERROR}.get(severity, logging.INFO)
        log.log(level, "%s: %s", kind, message, extra=self._log_extra)

    async def run(self, plan: Plan, target: Target, run_id: int) -> RunResult:
        """Run the steps in order; stop at the first that fails after its retries.

        Consecutive creates (or starts) of different services are independent of each other
        and run concurrently: on a multi-container bundle that is most of the apply time.
        """
        steps = list(plan.steps)
        admitted = False
        done = 0
        for group in _groups(steps):
            first_index, first = group[0]
            if first.action == "pull" and not admitted:
                try:
                    await self.admit(plan, target)
                except DiskFull as exc:
                    self._event("disk.refused", str(exc), "error", images=self._pull_images(plan))
                    self.recorder.journal_step(
                        run_id, first_index, first.to_dict(), "failed", str(exc)
                    )
                    self._skip_rest(run_id, steps, first_index + 1)
                    return RunResult(False, str(exc), first, done, disk_full=True)
                admitted = True
            for index, step in group:
                self.recorder.journal_step(run_id, index, step.to_dict(), "started")
            outcomes = await asyncio.gather(
                *(self._run_with_retries(step, target) for _, step in group)
            )
            failure: RunResult | None = None
            for (index, step), (error, kind) in zip(group, outcomes, strict=True):
                if error is None:
                    self.recorder.journal_step(run_id, index, step.to_dict(), "done")
                    done += 1
                    continue
                self.recorder.journal_step(run_id, index, step.to_dict(), "failed", error)
                if kind == "disk":
                    image = step.image if isinstance(step, Pull | Create | Recreate) else None
                    self._event("disk.refused", error, "error", images=[image])
                failure = failure or RunResult(
                    False,
                    error if kind == "disk" else f"{step.action} {step.service}: {error}",
                    step,
                    done,
                    disk_full=kind == "disk",
                    engine_down=kind == "engine_down",
                )
            if failure is not None:
                self._skip_rest(run_id, steps, group[-1][0] + 1)
                return failure
        return RunResult(True, None, None, done)

    def _skip_rest(self, run_id: int, steps: list[Step], start: int) -> None:
        for i in range(start, len(steps)):
            self.recorder.journal_step(run_id, i, steps[i].to_dict(), "skipped")

    @staticmethod
    def _pull_images(plan: Plan) -> list[str]:
        return [s.image for s in plan.steps if isinstance(s, Pull) and s.image]

    async def _run_with_retries(self, step: Step, target: Target) -> tuple[str | None, str]:
        """(error or None, kind of failure: "disk", "engine_down" or "step")."""
        delay = self.options.backoff
        last = "unknown error"
        kind = "step"
        for attempt in range(self.options.retries + 1):
            try:
                async with asyncio.timeout(self.options.timeout(step.action)):
                    await EXECUTORS[type(step)](self, step, target)
                return None, ""
            except DiskFull as exc:
                return str(exc), "disk"  # retrying will not make room
            except TimeoutError:
                last, kind = f"timed out after {self.options.timeout(step.action)}s", "step"
            except EngineUnavailable as exc:
                last, kind = str(exc), "engine_down"
            except EngineError as exc:  # includes PullError
                last, kind = str(exc), "step"
            if step.action == "pull" and attempt == self.options.retries:
                break
            if attempt < self.options.retries:
                log.warning(
                    "%s %s failed (attempt %d): %s; retrying in %.1fs",
                    step.action,
                    step.service,
                    attempt + 1,
                    last,
                    delay,
                    extra=self._log_extra,
                )
                await self._sleep(delay)
                delay = min(delay * 2, self.options.backoff_max)
        if isinstance(step, Pull):
            self._event(
                "pull.failed",
                f"pull {step.image} failed: {last}",
                "error",
                image=step.image,
                error=last,
            )
        return last, kind

    # -- one function per step type (EXECUTORS) -------------------------------------------
    async def exec_pull(self, step: Pull, target: Target) -> None:
        await self._pull(step.image, target)

    async def exec_create(self, step: Create, target: Target) -> None:
        await self._create(step, target)

    async def exec_start(self, step: Start, target: Target) -> None:
        ref = await self._start(step.ref, step, target)
        obs = await self.engine.inspect(ref)
        self._event(
            "container.started",
            f"started {obs.name if obs else ref} ({step.service}): {step.reason}",
            service=step.service,
            container=obs.id if obs else ref,
        )

    async def exec_stop(self, step: Stop, target: Target) -> None:
        await self.engine.stop(step.container_id, self.options.stop_timeout)

    async def exec_remove(self, step: Remove, target: Target) -> None:
        await self.engine.remove(step.container_id)
        self._event(
            "container.removed",
            f"removed {step.service} container {step.container_id[:12]}: {step.reason}",
            service=step.service,
            container=step.container_id,
        )

    async def exec_recreate(self, step: Recreate, target: Target) -> None:
        await self.engine.stop(step.container_id, self.options.stop_timeout)
        await self.engine.remove(step.container_id)
        await self._create(step, target)
        await self.engine.start(step.container_name)
        self._event(
            "container.started",
            f"recreated {step.container_name} ({step.service}): {step.reason}",
            service=step.service,
            container=step.container_name,
        )

    async def _start(self, ref: str, step: Start, target: Target) -> str:
        """Start; a container that will not start is replaced by a fresh one, once per try.

        Seen on Docker: a start cut off by the agent's death can leave the container so that
        every later start fails ("can't get final child's PID from pipe"). It holds no state
        of its own (volumes are separate), so recreating it is safe.
        """
        try:
            await self.engine.start(ref)
            return ref
        except EngineUnavailable:
            raise
        except EngineError as exc:
            obs = await self.engine.inspect(ref)
            want = next((s for s in target.services if s.service == step.service), None)
            if (
                obs is None
                or want is None
                or obs.spec_hash != want.spec_hash
                or obs.state not in ("created", "exited")
            ):
                raise
            log.warning(
                "start of %s failed (%s); replacing the container", obs.name, exc,
                extra=self._log_extra,
            )  # fmt: skip
            await self.engine.remove(obs.id)
            fresh = Create(
                step.service, "replacing a container that would not start",
                image=want.spec.image, container_name=obs.name, spec_hash=want.spec_hash,
            )  # fmt: skip
            await self._create(fresh, target)
            await self.engine.start(obs.name)
            return obs.name

    async def _create(self, step: Create | Recreate, target: Target) -> None:
        existing = await self.engine.inspect(step.container_name)
        if existing is not None and existing.spec_hash == step.spec_hash:
            return  # created by a run that was cut off before it could record it
        if existing is not None:
            await self.engine.remove(existing.id)
        want = next(s for s in target.services if s.service == step.service)
        req = create_request(
            want.spec,
            device_id=self.device_id,
            bundle=target.bundle or "",
            version=target.version or "",
            spec_hash=want.spec_hash,
            name=step.container_name,
        )
        # The secrets' values go in only here, into the request to the engine: the spec,
        # the plan and the journal hold the pinned references (bundles.variables).
        lookup = self.secrets or (lambda _name, _fp: None)
        try:
            env = open_secrets(req.env, lookup)
        except VariableError as exc:
            # Not the engine's fault, but a failed step all the same: the deployment fails
            # with the reason and the device keeps what it last had healthy.
            raise EngineError(f"cannot create {step.service}: {exc}") from None
        await self.engine.create(replace(req, env=env))

    # -- pulls and disk ------------------------------------------------------------------
    def _auth_for(self, image: str) -> RegistryAuth | None:
        host = image.split("/", 1)[0] if "/" in image else "docker.io"
        return self.options.registry_auth.get(host)

    async def _pull(self, image: str, target: Target) -> None:
        if await self.engine.image(image) is not None:
            return
        self._event("pull.started", f"pulling {image}", image=image)
        started = self._clock()
        last_emit = [started]
        latest: list[PullProgress | None] = [None]

        def progress(p: PullProgress) -> None:
            latest[0] = p
            now = self._clock()
            if now - last_emit[0] >= self.options.progress_interval:
                last_emit[0] = now
                self._event(
                    "pull.progress",
                    f"{image}: {p.layers_done}/{p.layers_total} layers, "
                    f"{p.current_bytes}/{p.total_bytes} bytes",
                    "debug",
                    image=image,
                    layers_done=p.layers_done,
                    layers_total=p.layers_total,
                    bytes=p.current_bytes,
                    total_bytes=p.total_bytes,
                )

        await self.engine.pull(image, progress=progress, auth=self._auth_for(image))
        info = await self.engine.image(image)
        size = info.size if info else 0
        budget = self.options.image_budget
        if budget is not None:
            used = await self._bundle_images_size(target)
            if used > budget:
                await self.engine.remove_image(image)
                raise DiskFull(
                    f"{image} ({size} bytes) takes the bundle's images to {used} bytes, "
                    f"over the image budget of {budget} bytes; removed it again"
                )
        p = latest[0]
        self._event(
            "pull.done",
            f"pulled {image} ({size} bytes) in {self._clock() - started:.1f}s",
            image=image,
            bytes=size,
            layers=p.layers_total if p else None,
            seconds=round(self._clock() - started, 3),
        )

    async def _bundle_images_size(
        self, target: Target, present: list[ImageInfo] | None = None
    ) -> int:
        """Bytes of the images the budget covers: the target's and those our containers use."""
        images = present if present is not None else await self.engine.list_images()
        wanted = set(target.images) | {c.image for c in await self.engine.list_containers()}
        return sum(i.size for i in images if wanted & set(i.tags) or i.id in wanted)

    @staticmethod
    def estimate(image: str, present: list[ImageInfo], default: int) -> int:
        """A pull's size before it starts: another tag of the same repository, if present."""
        repo = repository(image)
        sizes = [i.size for i in present if any(repository(t) == repo for t in i.tags)]
        return max(sizes) if sizes else default

    async def admit(self, plan: Plan, target: Target) -> None:
        """Refuse (DiskFull) pulls that would not fit the free disk or the image budget."""
        missing = self._pull_images(plan)
        if not missing:
            return
        present = await self.engine.list_images()
        need = sum(self.estimate(i, present, self.options.default_image_estimate) for i in missing)
        free = await self.engine.disk_free()
        if free is not None and free - need < self.options.min_free_bytes:
            raise DiskFull(
                f"pulling {', '.join(missing)} needs about {need} bytes; {free} free on the "
                f"engine's disk and {self.options.min_free_bytes} must stay free"
            )
        budget = self.options.image_budget
        if budget is not None:
            used = await self._bundle_images_size(target, present)
            if used + need > budget:
                raise DiskFull(
                    f"pulling {', '.join(missing)} needs about {need} bytes; with {used} bytes "
                    f"of images already present that exceeds the image budget of {budget} bytes"
                )

    async def prune(self, keep: Collection[str], candidates: Collection[str]) -> list[str]:
        """Remove candidate images not in ``keep``; images still in use are left alone."""
        removed: list[str] = []
        for image in sorted(set(candidates) - set(keep)):
            try:
                if await self.engine.remove_image(image):
                    removed.append(image)
            except EngineError as exc:
                log.warning("prune %s: %s", image, exc, extra=self._log_extra)
        if removed:
            self._event(
                "image.pruned", f"removed unused images: {', '.join(removed)}", images=removed
            )
        return removed


# The executor of each step type. A new step type without one fails the test that checks
# this table covers ``Step`` (tests/unit/test_executor.py), not a run on a device.
EXECUTORS: Mapping[type[Step], Callable[[Executor, Any, Target], Awaitable[None]]] = {
    Pull: Executor.exec_pull,
    Create: Executor.exec_create,
    Start: Executor.exec_start,
    Stop: Executor.exec_stop,
    Remove: Executor.exec_remove,
    Recreate: Executor.exec_recreate,
}

__all__ = ["EXECUTORS", "Executor", "ExecutorOptions", "PullError", "RunResult", "create_request"]
