"""Presence: heartbeats on ``sb.dev.*.heartbeat`` -> last seen, latest summary, online/offline.

Heartbeats are validated as they arrive (bad ones are counted and, at most once per device
per ``BAD_EVENT_EVERY``, recorded as a hub event) and kept in memory; every ``flush_every``
seconds the newest one per device is written in ONE transaction (last seen = the hub's
receive time, so device clock skew does not matter; the device's own ``ts`` is kept as
``sent_at``). A device not online before becomes online, with an ``online`` event in that
same transaction and a ``devices``/``online`` change notice.

Every heartbeat sent as a request gets a reply at once (``HEARTBEAT_ACK``, or the error shape
for a bad one): that reply is the device's proof that the hub itself, not just its leaf's TCP
link, is there ("online" on the device means the hub answered; docs/sync.md).

A sweep marks online devices whose last heartbeat is older than the grace period offline
(``offline`` event, notice). Right after the hub starts it waits one grace period first: a
hub that was down longer than the grace must not mark the whole fleet offline before the
devices' next heartbeats arrive.

Hub workers (``workers = M``, docs/architecture.md "Scale path"): worker ``p`` listens to its
own partition only (``listen``, ``partition``): an account subject mapping (hub/natsjwt.py
``heartbeat_mappings``) delivers ``sb.dev.<id>.heartbeat`` as ``...heartbeat.<p>``, the same
``partition()`` of the id as the device's reports, so each heartbeat reaches (and is answered
by) one worker. The sweep runs in the control-plane owner alone (``sweep``), over the whole
fleet: it reads only the persisted last-seen, so it needs no heartbeat of its own and covers
a dead worker's partition too. Its wait after start counts from the owner's *process* start
(``since``), not from when it took the lease: a standby that takes over has been running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hub.metrics import HubMetrics
from hub.store import Store
from hub.timeutil import now_iso
from protocol.errors import MessageError
from protocol.heartbeat import decode_heartbeat
from protocol.rpc import rpc_error
from protocol.subjects import (
    HEARTBEAT_WILDCARD,
    device_from_subject,
    heartbeat_partition,
    report_partition_of,
)
from sbutil.tasks import cancel_and_wait

log = logging.getLogger(__name__)

BAD_EVENT_EVERY = 10.0
MAX_PENDING = 200_000  # distinct devices buffered between two flushes
HEARTBEAT_ACK = b'{"v":1}'
StoreCall = Callable[..., Awaitable[Any]]
Notify = Callable[[str, str, dict[str, Any]], Awaitable[None]]
OnClaims = Callable[[dict[str, int]], Awaitable[None]]


Beat = tuple[str, str | None, str, str, str, float | None]


def handles(subject: str, partition: int | None, partitions: int) -> bool:
    """Whether the presence listener of ``partition`` (None: the one hub, every device) takes
    a heartbeat on ``subject``: only a device of its own partition, whatever the subject
    says. Unmapped (``sb.dev.<id>.heartbeat``: the account mapping not in place yet, e.g. a
    JWT resolver still holding an older account JWT until the owner pushes its own) every
    worker hears it and one keeps it. Mapped (``sb.dev.<id>.heartbeat.<p>``), ``p`` is not
    proof: a device may publish under ``sb.dev.<id>.>`` itself, so it could name any
    worker's subject and land on (or flood) a worker outside its partition; the worker
    computes the partition of the id either way."""
    if partition is None or partitions <= 1:
        return True
    parts = subject.split(".")
    if len(parts) == 5 and parts[4] != str(partition):
        return False
    device_id = device_from_subject(subject)
    return device_id is not None and report_partition_of(device_id, partitions) == partition


def may_sweep(now: float, since: float, grace: float) -> bool:
    """The sweep marks devices offline only once heartbeats have been listened for one
    ``grace`` (``since``: this process's start, monotonic): a hub, or a whole set of
    workers, back from longer than the grace must not mark its fleet offline before the
    devices' next heartbeats can arrive."""
    return now - since >= grace


def flush_beats(store: Store, beats: list[Beat]) -> list[tuple[str, str]]:
    with store.tx():
        came = store.put_heartbeats(beats)
        for device_id, before in came:
            store.add_event(device_id, "online", f"heartbeats resumed (was {before})")
    return came


def sweep_offline(
    store: Store, cutoff: str, grace: float, now: float | None = None
) -> list[tuple[str, str | None]]:
    with store.tx():
        stale = store.mark_stale_offline(cutoff, now=now)
        for device_id, last_seen in stale:
            store.add_event(
                device_id,
                "offline",
                f"no heartbeat for {grace:g} s (last seen {last_seen or 'never'})",
                {"last_seen": last_seen, "grace": grace},
                severity="warning",
            )
    return stale


class Presence:
    def __init__(
        self,
        nc: NATS,
        store: Store,
        call: StoreCall,
        metrics: HubMetrics,
        notify: Notify,
        *,
        grace: float = 90.0,
        flush_every: float = 1.0,
        on_claims: OnClaims | None = None,
        listen: bool = True,
        sweep: bool = True,
        partition: int | None = None,
        partitions: int = 1,
        since: float | None = None,
    ) -> None:
        self.nc = nc
        self.store = store
        self.call = call
        self.metrics = metrics
        self.notify = notify
        self.grace = grace
        self.flush_every = flush_every
        self.sweep_every = max(0.5, min(grace / 3, 5.0))
        # device -> (heartbeat JSON or None for "same", agent version, sent at, received at,
        # its interval): the newest only.
        self._pending: dict[str, tuple[str | None, str, str, str, float | None]] = {}
        # device -> last_seq of its heartbeats saying nothing is pending: after each flush
        # they go to ``on_claims`` (the delivery audit, hub.sync.audit).
        self.on_claims = on_claims
        self._claims: dict[str, int] = {}
        self._bad: list[tuple[str | None, str, str]] = []
        self._bad_event_at: dict[str | None, float] = {}
        # The one hub does both; a hub worker listens to its partition and only the
        # control-plane owner sweeps (module docstring).
        self.listen = listen
        self.sweeps = sweep
        self.partition = partition
        self.partitions = partitions
        self._subs: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None
        self._since = since
        self._started = time.monotonic() if since is None else since

    async def start(self) -> None:
        self._started = time.monotonic() if self._since is None else self._since
        if self.listen:
            subjects = [HEARTBEAT_WILDCARD]
            if self.partition is not None and self.partitions > 1:
                # Its partition, and unmapped heartbeats (``handles`` keeps its own).
                subjects.append(heartbeat_partition(self.partition))
            for subject in subjects:
                self._subs.append(await self.nc.subscribe(subject, cb=self._on_beat))
        self._task = asyncio.create_task(self._loop(), name="hub-presence")

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()

    async def _on_beat(self, msg: Msg) -> None:
        if not handles(msg.subject, self.partition, self.partitions):
            return  # another worker's device (and its answer)
        device_id = device_from_subject(msg.subject)
        try:
            hb = decode_heartbeat(msg.data, subject_device=device_id)
        except MessageError as exc:
            self.metrics.sync_messages.labels("heartbeat", "bad").inc()
            self.metrics.sync_bad.labels("heartbeat", exc.code).inc()
            self._bad.append((device_id, exc.code, f"{exc.field}: {exc.message}"))
            await self._answer(msg, rpc_error(exc.code, exc.message, exc.field))
            return
        await self._answer(msg, HEARTBEAT_ACK)
        if len(self._pending) >= MAX_PENDING and hb.device_id not in self._pending:
            return  # the next heartbeat of that device will do
        self.metrics.sync_messages.labels("heartbeat", "ok").inc()
        if hb.same:
            # "Nothing changed since my last full one": keep the summary and the delivery
            # claim the hub has (a full one still waiting in this flush included).
            prev = self._pending.get(hb.device_id)
            doc, version = (None, "") if prev is None else (prev[0], prev[1])
        else:
            if hb.outbox_pending == 0 and hb.last_seq > 0:
                self._claims[hb.device_id] = hb.last_seq
            else:
                self._claims.pop(hb.device_id, None)
            # Encoded once here, stored as is: decode -> encode -> decode -> encode per beat
            # was 6.5 % of the hub's CPU at 25 000 devices.
            doc, version = hb.to_json().decode(), hb.agent_version
        self._pending[hb.device_id] = (doc, version, now_iso(hb.ts), now_iso(), hb.interval)

    async def _answer(self, msg: Msg, body: bytes) -> None:
        """Reply to a heartbeat sent as a request (older agents publish without a reply)."""
        if not msg.reply:
            return
        try:
            await msg.respond(body)
        except Exception as exc:  # the device's next heartbeat asks again
            log.debug("heartbeat reply failed: %r", exc)

    async def _loop(self) -> None:
        last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(self.flush_every)
            try:
                await self.flush()
                if self.sweeps and time.monotonic() - last_sweep >= self.sweep_every:
                    last_sweep = time.monotonic()
                    await self.sweep()
            except Exception:
                log.exception("presence flush failed; retrying")

    async def flush(self) -> None:
        beats, self._pending = self._pending, {}
        claims, self._claims = self._claims, {}
        bad, self._bad = self._bad, []
        if bad:
            await self.call(self._record_bad, self.store, bad)
        if not beats:
            return
        rows = [(d, *beat) for d, beat in beats.items()]
        # Heartbeats of devices the hub does not know are skipped by put_heartbeats.
        came: list[tuple[str, str]] = await self.call(flush_beats, self.store, rows)
        if came:
            self.metrics.presence.labels("online").inc(len(came))
            ids = sorted(d for d, _ in came)
            for d in ids:
                log.info("online", extra={"device": d})
            await self.notify("devices", "online", {"devices": ids})
        if claims and self.on_claims is not None:
            try:
                await self.on_claims(claims)
            except Exception:
                log.warning("delivery audit failed", exc_info=True)

    async def sweep(self) -> None:
        if not may_sweep(time.monotonic(), self._started, self.grace):
            return
        cutoff = now_iso(time.time() - self.grace)
        stale: list[tuple[str, str | None]] = await self.call(
            sweep_offline, self.store, cutoff, self.grace, time.time()
        )
        if stale:
            self.metrics.presence.labels("offline").inc(len(stale))
            for d, seen in stale:
                log.warning("offline: no heartbeat since %s", seen, extra={"device": d})
            await self.notify("devices", "offline", {"devices": sorted(d for d, _ in stale)})

    def _record_bad(self, store: Store, bad: list[tuple[str | None, str, str]]) -> None:
        now = time.monotonic()
        for device_id, code, why in bad:
            known = device_id if device_id is not None and store.device_exists(device_id) else None
            log.warning("dropped a bad heartbeat: %s", why[:300], extra={"device": device_id})
            if now - self._bad_event_at.get(known, -BAD_EVENT_EVERY) < BAD_EVENT_EVERY:
                continue
            self._bad_event_at[known] = now
            store.add_event(
                known,
                "bad_message",
                f"heartbeat dropped: {why[:300]}",
                {"code": code, "subject_device": (device_id or "")[:64]},
                severity="warning",
            )
