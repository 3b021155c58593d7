"""The running agent: store + metrics loop + desired-state watcher + reconcile loop + hooks.

Everything runs on one asyncio loop in one process. Later features (sync with the hub, the
local HTTP API) plug in as hooks: ``agent.add_task(fn)`` where ``fn(agent, stop)`` is a
coroutine that returns when ``stop`` is set. The engine client and the reconciler are
imported only once needed, which keeps the idle footprint down (see docs/agent.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from agent import AGENT_VERSION
from agent.config import AgentConfig
from agent.context import AgentContext, Hook, Reconciler
from agent.desired_watch import DesiredWatch
from agent.errors import AgentError, EngineUnavailable, StoreError, StoreFull
from agent.store import Store
from agent.store.lock import AlreadyRunning, acquire_lock
from agent.store.lock import running_pid as running_pid  # re-exported for callers
from protocol.desired import DesiredState
from sbutil.tasks import cancel_and_wait, wait_for

if TYPE_CHECKING:
    from agent.runtime.base import Engine

log = logging.getLogger(__name__)

# Finding the engine at start: a busy engine (a loaded box, or one still starting beside the
# agent) is retried soon, then less often; each try also waits longer for its /version.
ENGINE_RETRY_FIRST = 1.0
ENGINE_RETRY_MAX = 30.0
ENGINE_PROBE_TIMEOUT = 3.0
ENGINE_PROBE_TIMEOUT_MAX = 15.0
STOP_GRACE = 10.0


def engine_retry_delay(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failed try (1-based): 1, 2, 4, ... 30 s."""
    return min(ENGINE_RETRY_MAX, ENGINE_RETRY_FIRST * 2.0 ** max(0, failures - 1))


def engine_probe_timeout(attempt: int) -> float:
    """How long the ``attempt``-th try (1-based) waits for ``/version``: 3, 6, 12, 15 s. An
    engine slower than the first timeout is still found, a few tries later."""
    return min(ENGINE_PROBE_TIMEOUT_MAX, ENGINE_PROBE_TIMEOUT * 2.0 ** max(0, attempt - 1))


DesiredListener = Callable[[DesiredState | None], None]


# Builds the reconciler once the engine answers; None means "run without one".
ReconcilerFactory = Callable[["Agent", "Engine"], Reconciler | None]


class LoopAdapter:
    """Fits ``agent.reconcile.loop.ReconcileLoop`` (run/stop/trigger) to ``Reconciler``."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop

    async def run(self, stop: asyncio.Event) -> None:
        task = asyncio.create_task(self.loop.run(), name="reconcile-loop")
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        self.loop.stop()
        stopper.cancel()
        await task

    def poke(self, reason: str) -> None:
        self.loop.trigger(reason)


def update_gate(agent: Agent) -> Any:
    """The update gate over this agent's store, lock directory and time zone."""
    from agent.updategate import UpdateGate, device_timezone

    cfg = agent.config.update
    assert agent.store is not None
    try:
        # Sticky and world-writable, like /tmp: an app running as any user can create its
        # lock, and only remove its own.
        cfg.lock_dir.mkdir(parents=True, exist_ok=True)
        cfg.lock_dir.chmod(0o1777)
    except OSError as exc:
        log.warning("update lock directory %s: %s", cfg.lock_dir, exc.strerror or exc)
    return UpdateGate(agent.store, cfg.lock_dir, device_timezone(cfg.timezone))


def default_reconciler(agent: Agent, engine: Engine) -> Reconciler | None:
    from agent.reconcile.executor import ExecutorOptions
    from agent.reconcile.loop import LoopOptions, ReconcileLoop
    from agent.runtime.base import RegistryAuth
    from agent.secretbox import SecretBox

    cfg = agent.config
    assert agent.store is not None
    auth = {
        a.registry: RegistryAuth(username=a.username, password=a.password, server=a.registry)
        for a in cfg.registry_auth
    }
    options = LoopOptions(
        interval=cfg.reconcile.interval,
        executor=ExecutorOptions(image_budget=cfg.image_disk_budget, registry_auth=auth),
    )
    store = agent.store
    loop = ReconcileLoop(
        engine,
        store,
        # Read on the store's thread (the loop awaits a provider that returns an awaitable).
        lambda: store.read(Store.current_desired),
        agent.device_id,
        options,
        update_gate=update_gate(agent),
        secrets=SecretBox(Path(cfg.data_dir), agent.store.sealed_secrets).get,
    )
    agent.reconcile_loop = loop
    return LoopAdapter(loop)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        reconciler_factory: ReconcilerFactory | None = default_reconciler,
        connect_engine: bool = True,
    ) -> None:
        self.config = config
        self.reconciler_factory = reconciler_factory
        self.connect_engine = connect_engine
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.reconciler: Reconciler | None = None
        self.reconcile_loop: Any = None  # the concrete ReconcileLoop, for status readers
        self.sync: Any = None  # the sync service, once the sync hook runs it
        self.stop_event: asyncio.Event | None = None
        self.probe_timeout = ENGINE_PROBE_TIMEOUT  # grows with each failed try at start
        self._hooks: list[Hook] = []
        self._desired_listeners: list[DesiredListener] = []
        self.desired_watch: DesiredWatch | None = None
        self._lock: IO[str] | None = None

    @property
    def device_id(self) -> str:
        return self.store.device_id if self.store is not None else self.config.device_id

    # ---------------------------------------------------------------- extension points

    def add_task(self, hook: Hook) -> None:
        """Run ``hook(agent, stop)`` alongside the core loops (sync, HTTP API, ...)."""
        self._hooks.append(hook)

    def on_desired_change(self, listener: DesiredListener) -> None:
        self._desired_listeners.append(listener)

    def notify_desired(self, reason: str = "desired") -> None:
        """In-process writers (sync) call this after ``store.put_desired``; other processes
        (``signalbeam-agent apply``) are noticed through ``PRAGMA data_version``. Either way
        the one detector (``agent.desired_watch``) decides whether anything changed."""
        if self.desired_watch is not None:
            self.desired_watch.check(reason)

    def request_stop(self) -> None:
        if self.stop_event is not None and not self.stop_event.is_set():
            log.info("stopping", extra={"device": self.device_id})
            self.stop_event.set()

    # ---------------------------------------------------------------- lifecycle

    def open_store(self) -> Store:
        cfg = self.config
        self.store = Store.open(
            cfg.db_path,
            device_id=cfg.device_id,
            adopt_stored_id=not cfg.device_id_configured,
            recover=True,
        )
        return self.store

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT or ``request_stop()``."""
        self.stop_event = stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []
        # SIGUSR1 is `signalbeam-agent apply` saying "desired state changed"; its handler is
        # in place before the lock publishes our pid, because SIGUSR1's default is to kill.
        handlers = {
            signal.SIGTERM: self.request_stop,
            signal.SIGINT: self.request_stop,
            signal.SIGUSR1: self._nudged,
        }
        for sig, handler in handlers.items():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, handler)
                installed.append(sig)
        try:
            self._lock = acquire_lock(self.config.data_dir)
            store = self.open_store()
            try:
                await store.write(
                    Store.event,
                    "agent.started",
                    f"agent {AGENT_VERSION} started (pid {os.getpid()})",
                    data={"version": AGENT_VERSION, "pid": os.getpid()},
                )
            except StoreFull as exc:
                # A full disk is reported (readiness, 507s, this log line), not fatal: the
                # store opened, so desired state is readable and the API can say what is
                # wrong. Whether this one write fit used to decide whether the agent ran.
                log.error("%s; running without writing until space is freed", exc)
            log.info(
                "agent started",
                extra={"device": store.device_id, "data_dir": str(self.config.data_dir)},
            )
            watch = DesiredWatch(
                store.current_desired, store.data_version, device_id=store.device_id
            )
            watch.listen(self._desired_changed)
            watch.prime()
            self.desired_watch = watch
            tasks = [
                asyncio.create_task(self._metrics(stop), name="metrics"),
                asyncio.create_task(
                    watch.run(stop, self.config.desired_poll_interval), name="desired-watch"
                ),
            ]
            if self.connect_engine:
                tasks.append(
                    asyncio.create_task(self._engine_and_reconcile(stop), name="reconcile")
                )
            tasks += [
                asyncio.create_task(h(self, stop), name=getattr(h, "__name__", "hook"))
                for h in self._hooks
            ]
            for t in tasks:
                t.add_done_callback(self._task_ended)
            await stop.wait()
            await self._shutdown(tasks)
            try:
                await store.write(Store.event, "agent.stopped", "agent stopped cleanly")
            except StoreFull as exc:
                log.error("%s; stopped without recording it", exc)
        finally:
            if self.engine is not None:
                with contextlib.suppress(Exception):
                    await self.engine.close()
            if self.store is not None:
                self.store.close()
            if self._lock is not None:
                self._lock.close()
                self._lock = None
            for sig in installed:
                loop.remove_signal_handler(sig)
            if signal.SIGUSR1 in installed:
                # A nudge racing with shutdown must not kill us with SIGUSR1's default.
                signal.signal(signal.SIGUSR1, signal.SIG_IGN)

    def _nudged(self) -> None:
        if self.desired_watch is not None:
            try:
                self.desired_watch.check("desired")
            except StoreError:
                log.exception("desired check failed", extra={"device": self.device_id})

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """A task that dies while the agent runs is reported at once, not at shutdown: the
        rest keeps running (reconciling matters more than any one feature)."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error(
            "task %s failed: %r",
            task.get_name(),
            exc,
            exc_info=exc,
            extra={"device": self.device_id},
        )
        if self.store is not None and not (self.stop_event and self.stop_event.is_set()):
            with contextlib.suppress(Exception):
                self.store.event(
                    "agent.task_failed",
                    f"{task.get_name()} stopped: {exc!r}",
                    severity="error",
                    data={"task": task.get_name()},
                )

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
        if pending:
            # Cancelled again while running (a cancel lost in 3.11's wait_for), still bounded.
            with contextlib.suppress(TimeoutError):
                await wait_for(cancel_and_wait(pending), STOP_GRACE)

    # ---------------------------------------------------------------- core tasks

    async def _metrics(self, stop: asyncio.Event) -> None:
        from agent.metrics.sampler import MetricsLoop

        assert self.store is not None
        loop = MetricsLoop(
            self.store,
            self.config.metrics,
            self.config.outbox,
            disk_path=self.config.data_dir,
            container_stats=self._container_stats,
        )
        self.metrics_loop = loop
        await loop.run(stop)

    async def _container_stats(self) -> dict[str, dict[str, float]]:
        engine = self.engine
        if engine is None:
            return {}
        running = [c for c in await engine.list_containers() if c.state == "running"]
        # One stats call can take a second or two (the engine samples CPU twice); asking for
        # all containers at once keeps a round inside the sampler's timeout.
        results = await asyncio.gather(
            *(engine.stats(c.id) for c in running), return_exceptions=True
        )
        out: dict[str, dict[str, float]] = {}
        for c, s in zip(running, results, strict=True):
            if isinstance(s, BaseException):
                log.debug("stats for %s failed: %r", c.name, s, extra={"device": self.device_id})
                continue
            out[c.service or c.name] = {
                "cpu_percent": s.cpu_percent,
                "memory_bytes": float(s.memory_bytes),
            }
        return out

    def _desired_changed(self, current: DesiredState | None, reason: str) -> None:
        for listener in self._desired_listeners:
            try:
                listener(current)
            except Exception:
                log.exception("desired listener failed", extra={"device": self.device_id})
        if self.reconciler is not None:
            self.reconciler.poke(reason)

    async def connect(self) -> Engine:
        """Find an engine without blocking the loop, then build its client on the loop
        (the aiohttp-based client must be created where it will run). Each socket gets
        ``self.probe_timeout`` seconds to answer ``/version``."""
        from agent.runtime.detect import candidate_urls, engine_for, probe

        cfg = self.config
        tried = candidate_urls(cfg.engine_socket)
        for url in tried:
            found = await asyncio.to_thread(probe, url, self.probe_timeout)
            if found is not None:
                kind = found if cfg.engine == "auto" else cfg.engine
                return engine_for(self.device_id, url, kind)
        raise EngineUnavailable("no container engine answered", tried)

    async def _event_unless_full(self, kind: str, message: str, **kw: Any) -> None:
        """Record an event; on a full disk, log it instead. An event that does not fit must
        not end the task that wanted it (connecting the engine, running the reconciler)."""
        assert self.store is not None
        try:
            await self.store.write(Store.event, kind, message, **kw)
        except StoreFull as exc:
            log.warning(
                "%s: %s (not recorded: %s)", kind, message, exc, extra={"device": self.device_id}
            )

    async def _engine_and_reconcile(self, stop: asyncio.Event) -> None:
        assert self.store is not None
        reported = False
        delays: list[float] = []  # waited between tries, for the engine.connected event
        while not stop.is_set():
            try:
                self.probe_timeout = engine_probe_timeout(len(delays) + 1)
                self.engine = await self.connect()
                break
            except Exception as exc:  # EngineUnavailable, or a client that would not build
                if not reported:
                    await self._event_unless_full(
                        "engine.unavailable",
                        str(exc),
                        severity="error",
                        data={"tried": getattr(exc, "tried", None), "error": type(exc).__name__},
                    )
                    reported = True
                delays.append(engine_retry_delay(len(delays) + 1))
                log.warning(
                    "%s; retrying in %.0fs", exc, delays[-1], extra={"device": self.device_id}
                )
            with contextlib.suppress(TimeoutError):
                await wait_for(stop.wait(), delays[-1])
        if self.engine is None:
            return
        info: dict[str, Any] = {
            "kind": self.engine.kind,
            "url": self.engine.url,
            "attempts": len(delays) + 1,
            "retry_delays": delays,
        }
        try:
            details = await self.engine.info()
            info.update(version=details.version, data_root=details.data_root)
            if details.data_root and getattr(self, "metrics_loop", None) is not None:
                # Disk metrics should describe where images live, not the agent's data dir.
                self.metrics_loop.disk_path = details.data_root
        except Exception as exc:
            log.warning("engine info unavailable: %s", exc, extra={"device": self.device_id})
        await self._event_unless_full(
            "engine.connected", f"connected to {info['kind']} at {info['url']}", data=info
        )
        if self.reconciler_factory is None:
            return
        self.reconciler = self.reconciler_factory(self, self.engine)
        if self.reconciler is None:
            return
        try:
            await self.reconciler.run(stop)
        except Exception as exc:
            # Say so loudly and keep the rest (metrics, events, sync) running.
            log.exception("reconcile loop crashed", extra={"device": self.device_id})
            await self.store.write(
                Store.event,
                "reconcile.crashed",
                f"reconcile loop stopped: {exc!r}",
                severity="error",
            )


async def http_hook(agent: AgentContext, stop: asyncio.Event) -> None:
    """The local HTTP API (agent.http), imported only when it starts."""
    try:
        from agent.http.server import serve
    except ImportError as exc:
        log.warning("local HTTP API not available: %s", exc, extra={"device": agent.device_id})
        return
    await serve(agent, stop)


async def sync_hook(agent: AgentContext, stop: asyncio.Event) -> None:
    """Hub sync (agent.sync), started once a hub URL is configured or the device is enrolled;
    an enrollment done while the agent runs is picked up within ``ENROLL_POLL`` s."""
    # agent.sync.gate imports no NATS client: an agent that is never enrolled never loads it.
    from agent.sync.gate import wait_until_configured

    if not await wait_until_configured(agent.config, stop, agent.device_id):
        return
    try:
        from agent.sync.service import sync_hook as run_sync
    except ImportError as exc:
        log.warning("hub sync not available: %s", exc, extra={"device": agent.device_id})
        return
    await run_sync(agent, stop)


def default_hooks(config: AgentConfig) -> list[Hook]:
    hooks: list[Hook] = [sync_hook]
    if config.http.enabled:
        hooks.append(http_hook)
    return hooks


def run_agent(config: AgentConfig) -> int:
    """Run the agent (with sync and the local API) until signalled; returns an exit code."""
    agent = Agent(config)
    for hook in default_hooks(config):
        agent.add_task(hook)
    try:
        asyncio.run(agent.run())
    except AlreadyRunning as exc:
        log.error("%s", exc)
        return 3
    except AgentError as exc:
        log.error("agent failed: %s", exc, extra={"device": agent.device_id})
        return 1
    return 0
