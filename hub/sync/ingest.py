"""The report ingest: one durable pull consumer on ``SB_REPORTS``, fetched in batches.

Each fetch (up to ``FETCH_BATCH`` messages, any devices) is validated and applied in ONE
SQLite transaction on the store's writer thread (``hub.sync.apply``); only after it
committed are the messages acked (or termed: garbage, or nak'd with a delay: an earlier
batch is still coming). A hub killed at any point therefore loses nothing (unacked messages
are redelivered after ``ACK_WAIT``) and doubles nothing (``last_applied_seq`` committed with
the rows turns the redelivery into a no-op).

With hub workers (docs/architecture.md "Scale path") each worker has its own durable,
``hub-ingest-p<i>``, filtered on its partition's subjects (``sb.dev.*.report.<i>``): a
device's reports all go to one worker, in order, and a killed worker's partition resumes
from its durable where it stopped. Worker 0 also drains what a single hub left unpartitioned.

The next fetch is already on its way while one is applied (``Ingest._run``), so the store
thread does not sit idle through the fetch round trip and the acks.

One message never fails a fetch (``hub.sync.apply`` isolates each in a savepoint); only the
store itself can (disk full). While fetches keep failing, ``Ingest.stuck()`` says so and the
hub's ``/health/ready`` answers 503 with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from hub.metrics import HubMetrics
from hub.store import Store
from hub.sync.apply import GIVE_UP_DELIVERIES, Applier, Outcome, fetched
from protocol.subjects import REPORT_STREAM, REPORT_WILDCARD, report_partition
from sbutil.tasks import cancel_and_wait

log = logging.getLogger(__name__)

DURABLE = "hub-ingest"
FETCH_BATCH = 100
FETCH_WAIT = 1.0
# Redelivery after a hub crash waits this long; one fetch must be applied well within it.
ACK_WAIT = 10.0
NAK_DELAY = 0.5
ERROR_BACKOFF_MAX = 5.0
# Failing this long without one fetch applied is "stuck" (readiness says so).
STUCK_AFTER = 15.0

StoreCall = Callable[..., Awaitable[Any]]
OnApplied = Callable[[set[str]], Awaitable[None]]


class Stuck:
    """Pure bookkeeping of consecutive failed applies (``now`` is monotonic seconds)."""

    def __init__(self, after: float = STUCK_AFTER) -> None:
        self.after = after
        self.failures = 0
        self.since: float | None = None
        self.error = ""

    def failed(self, now: float, error: str) -> None:
        self.failures += 1
        self.error = error
        if self.since is None:
            self.since = now

    def ok(self) -> None:
        self.failures, self.since, self.error = 0, None, ""

    def reason(self, now: float) -> str | None:
        if self.since is None or now - self.since < self.after or self.failures < 2:
            return None
        return (
            f"report ingest stuck: {self.failures} fetches in a row could not be applied"
            f" over {now - self.since:.0f} s ({self.error[:200]})"
        )


def durable_name(partition: int | None) -> str:
    return DURABLE if partition is None else f"{DURABLE}-p{partition}"


def filter_subjects(partition: int | None) -> list[str]:
    """What a worker's durable takes: its partition, and for worker 0 also the reports a
    single hub left stored unpartitioned (a work-queue stream refuses overlapping filters,
    so exactly one consumer may hold them)."""
    if partition is None:
        return [REPORT_WILDCARD]
    return [report_partition(partition), *([REPORT_WILDCARD] if partition == 0 else [])]


def consumer_config(partition: int | None = None) -> ConsumerConfig:
    subjects = filter_subjects(partition)
    return ConsumerConfig(
        durable_name=durable_name(partition),
        description="hub ingest: applies report rows to the fleet store",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT,
        # Unlimited: a message is only ever dropped by a decision (term), never by a count.
        max_deliver=-1,
        max_ack_pending=20_000,
        filter_subject=subjects[0] if len(subjects) == 1 else None,
        filter_subjects=subjects if len(subjects) > 1 else None,
    )


def stale_durables(names: list[str], partition: int | None, partitions: int) -> list[str]:
    """The ingest durables that would overlap this one's filter on the work-queue stream
    (nats-server refuses a second consumer on the same subjects): one hub removes every
    worker's; worker 0 removes the single hub's and those of workers beyond ``partitions``
    (the worker count was lowered)."""
    stale = []
    for name in names:
        if name == DURABLE:
            if partition is not None:
                stale.append(name)
        elif name.startswith(f"{DURABLE}-p"):
            index = name.removeprefix(f"{DURABLE}-p")
            if partition is None or (
                partition == 0 and (not index.isdigit() or int(index) >= partitions)
            ):
                stale.append(name)
    return stale


class Ingest:
    def __init__(
        self,
        js: JetStreamContext,
        store: Store,
        call: StoreCall,
        metrics: HubMetrics,
        *,
        on_applied: OnApplied | None = None,
        partition: int | None = None,
        partitions: int = 1,
    ) -> None:
        self.js = js
        # None: the one hub, every report; else this worker's index of ``partitions``.
        self.partition = partition
        self.partitions = partitions
        self.store = store
        self.call = call
        self.metrics = metrics
        self.on_applied = on_applied
        self.applier = Applier()
        self.batches = 0
        self.health = Stuck()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def stuck(self) -> str | None:
        """Why ingest is stuck (every fetch failing for ``STUCK_AFTER`` s), or None."""
        return self.health.reason(time.monotonic())

    async def start(self) -> None:
        names = [c.name for c in await self.js.consumers_info(REPORT_STREAM)]
        for name in stale_durables(names, self.partition, self.partitions):
            # Its unacked messages stay in the stream for the consumer now filtering them.
            with contextlib.suppress(NotFoundError):
                await self.js.delete_consumer(REPORT_STREAM, name)
                log.info("removed ingest durable %s (worker layout changed)", name)
        await self.js.add_consumer(REPORT_STREAM, consumer_config(self.partition))
        sub = await self.js.pull_subscribe_bind(
            durable=durable_name(self.partition), stream=REPORT_STREAM
        )
        self._task = asyncio.create_task(self._run(sub), name="hub-ingest")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                # The loop ends by itself after the fetch in flight and the batch applying
                # (asyncio.wait never cancels it, and never swallows a cancel of ours).
                await asyncio.wait({self._task}, timeout=FETCH_WAIT + 5)
            finally:
                # Ended: nothing to do. Still running (a cancel of this stop, or past the
                # bound): cancelled, again if a library's wait_for loses the first cancel.
                await cancel_and_wait([self._task])
            self._task = None

    async def _run(self, sub: JetStreamContext.PullSubscription) -> None:
        # Pipelined: while one fetch is applied on the store thread, the next one is already
        # being fetched (at most one batch waits beyond the one applying). Stream order is
        # kept: the prefetched batch holds later messages and is applied only after the
        # current one committed, so a device's next report never overtakes its previous one.
        backoff = 0.1
        ahead: asyncio.Task[list[Any] | None] | None = None
        try:
            while not self._stop.is_set():
                if ahead is None:
                    ahead = asyncio.create_task(self._fetch(sub))
                msgs = await ahead
                ahead = None
                if msgs is None:  # fetch failed: connection trouble
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, ERROR_BACKOFF_MAX)
                    continue
                if not msgs:
                    continue
                if not self._stop.is_set():
                    ahead = asyncio.create_task(self._fetch(sub))
                if await self._handle(msgs):
                    backoff = 0.1
                else:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, ERROR_BACKOFF_MAX)
        finally:
            if ahead is not None:
                await self._give_back(ahead)

    async def _fetch(self, sub: JetStreamContext.PullSubscription) -> list[Any] | None:
        """One fetch: the messages ([] when none came in ``FETCH_WAIT``), None on an error."""
        try:
            return list(await sub.fetch(FETCH_BATCH, timeout=FETCH_WAIT))
        except (nats.errors.TimeoutError, TimeoutError):
            return []
        except Exception as exc:
            # Connection trouble (the hub's own nats-server restarting): the loop backs off.
            log.warning("report fetch failed: %s; retrying", exc)
            return None

    async def _give_back(self, ahead: asyncio.Task[list[Any] | None]) -> None:
        """On stop, a prefetched batch that will not be applied is nak'd without delay, so
        the next hub start gets it at once instead of after ``ACK_WAIT``."""
        try:
            done, _ = await asyncio.wait({ahead}, timeout=FETCH_WAIT + 1)
        except asyncio.CancelledError:
            ahead.cancel()
            raise
        if not done:
            await cancel_and_wait([ahead])
            return
        if ahead.cancelled() or ahead.exception() is not None:
            return
        for m in ahead.result() or []:
            with contextlib.suppress(Exception):
                await m.nak()

    async def _earlier_stored(self, m: Any) -> bool:
        """Whether the stream still holds a report on ``m``'s subject (its device) stored
        before ``m``. True when the lookup fails: giving up on a batch is what drops rows,
        so it waits for a lookup that answers."""
        try:
            first = await self.js.get_msg(REPORT_STREAM, seq=1, subject=m.subject, next=True)
        except NotFoundError:
            return False
        except Exception as exc:
            log.warning("looking up earlier reports on %s failed: %s", m.subject[:128], exc)
            return True
        return bool(first.seq is not None and first.seq < m.metadata.sequence.stream)

    async def _handle(self, msgs: list[Any]) -> bool:
        """Apply one fetch and settle every message; False when nothing could be applied."""
        items = []
        for m in msgs:
            delivered = m.metadata.num_delivered or 1
            # Rare (a batch that waited ~10 s for its predecessor), so a lookup each is fine.
            earlier = delivered >= GIVE_UP_DELIVERIES and await self._earlier_stored(m)
            items.append(fetched(m.subject, m.data, m.headers, delivered, earlier))
        started = time.perf_counter()
        try:
            outcome: Outcome = await self.call(self.applier.apply_fetch, self.store, items)
        except Exception as exc:
            # Nothing committed (disk full, I/O error): every message comes back later.
            self.health.failed(time.monotonic(), repr(exc))
            self.metrics.sync_ingest_failures.inc()
            log.exception("applying %d report messages failed; they will be redelivered", len(msgs))
            for m in msgs:
                with contextlib.suppress(Exception):
                    await m.nak(delay=NAK_DELAY * 4)
            return False
        self.metrics.sync_batch_seconds.observe(time.perf_counter() - started)
        self.health.ok()
        self.batches += 1
        for m, action in zip(msgs, outcome.actions, strict=True):
            try:
                if action == "ack":
                    await m.ack()
                elif action == "nak":
                    await m.nak(delay=NAK_DELAY)
                else:
                    await m.term()
            except Exception as exc:  # a lost ack only means a harmless redelivery
                log.debug("ack failed: %s", exc)
        self._count(outcome)
        if outcome.devices and self.on_applied is not None:
            try:
                await self.on_applied(outcome.devices)
            except Exception:
                log.warning("on_applied hook failed", exc_info=True)
        return True

    def _count(self, o: Outcome) -> None:
        m = self.metrics
        for action in o.actions:
            m.sync_messages.labels(
                "report", {"ack": "ok", "nak": "postponed"}.get(action, "bad")
            ).inc()
        for _device, code, _why in o.bad:
            m.sync_bad.labels("report", code).inc()
        m.sync_naks.inc(o.actions.count("nak"))
        m.sync_rows.labels("applied").inc(o.applied_rows)
        m.sync_rows.labels("replayed").inc(o.replayed_rows)
        m.sync_rows.labels("skipped").inc(o.skipped_rows)
        m.sync_gaps.inc(o.gaps)
        m.sync_store_resets.inc(o.store_resets)
        m.sync_poison.inc(o.poison)
