"""One simulated device's I/O: heartbeats, the outbox drain (chained report batches with the
agent's own packer), desired-state reads (prompt + direct get) and the simulated apply.

Timers are not tasks per device: ``SimFleet``'s ticker (one heap of due times) calls
``send_heartbeat()`` and ``rollup_due()``, so a fleet of 100 000 devices costs one loop, not
hundreds of thousands of sleeping tasks.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from agent.sync.batching import pack
from agent.sync.downlink import Announced, kv_bucket
from bench.sim.model import DeviceModel
from bench.sim.options import SimOptions
from protocol.desired import DesiredDecodeError, DesiredState
from protocol.subjects import REPORT_STREAM, heartbeat, report
from sbutil.tasks import cancel_and_wait, wait_for

log = logging.getLogger(__name__)

ACK_TIMEOUT = 10.0
BATCH_BYTES = 64 * 1024  # what the agent packs to
BATCH_ROWS = 500
RETRY_S = 1.0


@dataclass
class Link:
    """A NATS connection carrying one device (its own credentials) or many (shared)."""

    nc: NATS
    js: JetStreamContext
    kv: KeyValue

    @classmethod
    def of(cls, nc: NATS) -> Link:
        js = nc.jetstream(domain="hub")
        return cls(nc, js, kv_bucket(js))


@dataclass
class Counters:
    heartbeats: int = 0
    batches: int = 0
    rows: int = 0
    duplicates: int = 0
    publish_failures: int = 0
    probes: int = 0
    probe_failures: int = 0
    revisions: int = 0
    applies: int = 0


class SimDevice:
    def __init__(self, model: DeviceModel, options: SimOptions, counters: Counters) -> None:
        self.model = model
        self.id = model.device_id
        self.opts = options
        self.counters = counters
        self.link: Link | None = None
        self.online = False
        self._flushing = False
        self._probing = False
        self._probe_again = False
        self._announced = Announced()  # as the agent: a read older than its prompt is redone
        self._apply: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.last_heartbeat_at: float | None = None
        # With ``flush_s``: when the lingering rollups go next. Each device's phase is its
        # own (random from its id, not the metrics' rng), as real devices' clocks are.
        self.flush_at = time.time() + random.Random(self.id).uniform(0, options.flush_s)

    # ------------------------------------------------------------------ scheduling

    def spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def rollup_due(self) -> None:
        """A minute's rollup is written whether or not the link is up (the agent keeps
        recording offline); it travels when the link allows."""
        now = time.time()
        self.model.rollup(now)
        if self.opts.flush_s:
            if now < self.flush_at:
                return  # lingers, as the agent's metrics rows do (pacing ``flush``)
            self.flush_at = max(self.flush_at + self.opts.flush_s, now)
        self.kick()

    def kick(self) -> None:
        if self.online and self.link is not None and self.model.outbox and not self._flushing:
            self._flushing = True
            self.spawn(self.flush())

    # ------------------------------------------------------------------ upstream

    async def send_heartbeat(self) -> float | None:
        """Publish a heartbeat now; returns its ``ts`` (None when not sent)."""
        if self.link is None or not self.online:
            return None
        hb = self.model.heartbeat(time.time())
        body = hb.to_json()
        try:
            # Core publish, best effort: exactly what the agent does.
            await self.link.nc.publish(heartbeat(self.id), body)
        except Exception as exc:  # a closed connection: the next beat tries again
            log.debug("heartbeat of %s not sent: %s", self.id, exc)
            return None
        self.counters.heartbeats += 1
        self.last_heartbeat_at = time.time()
        return hb.ts

    async def flush(self) -> None:
        """Publish the whole backlog as chained batches; drop what the stream acknowledged."""
        try:
            while self.online and self.link is not None and self.model.outbox:
                rows = list(self.model.outbox[:5000])
                m = self.model
                batches = pack(
                    self.id,
                    rows,
                    max_bytes=BATCH_BYTES,
                    max_rows=BATCH_ROWS,
                    prev_seq=m.acked_seq if m.acked_seq < rows[0][0] else 0,
                )
                js = self.link.js
                futs = []
                for b in batches:
                    futs.append(
                        (
                            b,
                            await js.publish_async(
                                report(self.id),
                                b.body,
                                wait_stall=ACK_TIMEOUT,
                                stream=REPORT_STREAM,
                            ),
                        )
                    )
                try:
                    for b, fut in futs:
                        ack = await wait_for(fut, ACK_TIMEOUT)
                        m.acked(b.last_seq)
                        self.counters.batches += 1
                        self.counters.rows += b.rows
                        if getattr(ack, "duplicate", False):
                            self.counters.duplicates += 1
                finally:
                    for _, fut in futs:
                        if not fut.done():
                            fut.cancel()
                        elif not fut.cancelled():
                            fut.exception()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Link down, stream full, stalled window: rows stay, retried shortly.
            self.counters.publish_failures += 1
            log.debug("report of %s not sent: %r", self.id, exc)
            self._flushing = False
            asyncio.get_running_loop().call_later(RETRY_S, self.kick)
            return
        self._flushing = False

    # ------------------------------------------------------------------ downstream

    def prompt(self, revision: int = 0) -> None:
        """A desired-state prompt (or a reconnect): read the key, coalescing bursts.
        ``revision``: the one the prompt announced (its ``Nats-Sequence``; 0: none)."""
        self._announced.announce(revision)
        if self._probing:
            self._probe_again = True
            return
        self._probing = True
        self.spawn(self.probe())

    async def probe(self) -> None:
        try:
            while True:
                self._probe_again = False
                await self._read_once()
                if not self._probe_again:
                    return
        finally:
            self._probing = False

    async def _read_once(self) -> None:
        if self.link is None or not self.online:
            return
        self.counters.probes += 1
        try:
            entry = await wait_for(self.link.kv.get(self.id), ACK_TIMEOUT)
        except nats.js.errors.KeyNotFoundError:
            self._read_again_if_behind()  # a replica without the announced first put
            return
        except (nats.errors.Error, TimeoutError, nats.js.errors.Error) as exc:
            self.counters.probe_failures += 1
            log.debug("desired read of %s failed: %r", self.id, exc)
            # Read again shortly, as the agent's own poll would: the prompt that brought us
            # here is not sent twice, so without this a device whose read timed out on a busy
            # machine never sees the revision (a rollout then waits on it for ever).
            # Spread over a few seconds: reads that timed out together must not retry together.
            asyncio.get_running_loop().call_later(RETRY_S * (1 + 4 * random.random()), self.prompt)
            return
        revision = entry.revision or 0
        if revision <= self.model.desired_generation:
            self._read_again_if_behind()
            return
        try:
            doc = DesiredState.from_json(entry.value or b"")
        except DesiredDecodeError as exc:
            self.model.desired_generation = revision
            self.model.event(
                "desired.invalid",
                f"desired revision {revision} from the hub is invalid: {exc}",
                severity="error",
                data={"revision": revision, "field": exc.field, "error": exc.message},
            )
            return
        now = time.time()
        if self.model.store_desired(revision, doc, now):
            self.counters.revisions += 1
            if self._apply is not None and not self._apply.done():
                self._apply.cancel()
            dep = self.model.begin(revision, doc.spec, now)
            self._apply = asyncio.get_running_loop().create_task(self._finish(dep))
            self.kick()
        self._read_again_if_behind()  # a replica may be ahead of the one read, yet behind

    def _read_again_if_behind(self) -> None:
        """A read older than the revision a prompt announced (a hub cluster's replica that
        has not stored the put yet): read again shortly, as the agent does. Without it the
        device never saw its revision (no poll here) and a rollout waited on it for ever."""
        delay = self._announced.read_again(self.model.desired_generation)
        if delay is not None:
            asyncio.get_running_loop().call_later(delay, self.prompt)

    async def _finish(self, dep: Any) -> None:
        await asyncio.sleep(self.opts.apply_s)
        previous = self.model.running
        if dep.bundle_ref not in self.opts.fail_versions:
            self.model.finish(dep, "healthy", None, time.time())
        elif self.opts.rollback_s is None or previous is None:
            self.model.finish(dep, "failed", "simulated failure (fail_versions)", time.time())
        else:
            # As the agent does: the failed generation is rolled back, then the previous
            # healthy deployment is written healthy again (the device's newest row).
            self.model.finish(dep, "rolled_back", "simulated crash loop (fail_versions)",
                              time.time())  # fmt: skip
            if self.opts.rollback_s > 0:
                self.kick()
                await asyncio.sleep(self.opts.rollback_s)
            self.model.finish(previous, "healthy", None, time.time())
        self.counters.applies += 1
        self.kick()

    # ------------------------------------------------------------------ lifecycle

    def attach(self, link: Link) -> None:
        """Link up: heartbeat at once (as the agent does on a new link epoch), read the
        desired key (puts made while down were never prompted), drain the backlog."""
        self.link = link
        self.online = True
        self.spawn(self.send_heartbeat())
        self.prompt()
        self.kick()

    def detach(self) -> None:
        self.online = False
        self.link = None

    async def close(self) -> None:
        self.detach()
        await cancel_and_wait([*self._tasks, self._apply])
