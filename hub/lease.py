"""The control-plane owner's lease: which of the hub workers runs the operator API, desired
publication, enrollment and the rollout controller (docs/architecture.md "Scale path").

The lease is one key (``protocol.subjects.LEASE_KEY``) in a NATS KV bucket whose max age is
the lease's TTL. A worker becomes the owner by *creating* the key (refused while it
exists); the owner renews it with a revision-checked update every ``RENEW_EVERY`` seconds.
A dead owner stops renewing, JetStream expires the key after ``TTL`` seconds, and the next
standby's create succeeds: a standby owns within ``TTL + POLL_EVERY``.

An owner that cannot renew (another worker holds a newer revision, or no renewal got
through for ``TTL - SAFETY`` seconds) has lost the lease and must stop acting as the owner
at once: ``Lease.lost`` is set and the hub process exits (a supervisor starts it again as a
standby). Two owners at once would need a renewal that succeeded after the key expired,
which the revision check refuses. A graceful stop deletes the key (revision-checked), so a
standby takes over without waiting for the TTL.

``LeaseClock`` is the pure part (when to renew, when the lease counts as lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from protocol.subjects import LEASE_BUCKET, LEASE_KEY
from sbutil.tasks import cancel_and_wait

log = logging.getLogger(__name__)

TTL = 6.0  # seconds a lease lives without a renewal
RENEW_EVERY = 1.5
POLL_EVERY = 1.0  # a standby's create attempts
SAFETY = 1.5  # an owner gives up this long before its key could have expired


@dataclass
class LeaseClock:
    """When the owner last renewed (monotonic seconds), and what follows from it."""

    ttl: float = TTL
    safety: float = SAFETY
    renewed_at: float | None = None

    def renewed(self, now: float) -> None:
        self.renewed_at = now

    def expired(self, now: float) -> bool:
        """True once the key may have expired on the server (so another worker may own)."""
        return self.renewed_at is None or now - self.renewed_at >= self.ttl - self.safety


def holder_doc(name: str) -> bytes:
    return json.dumps(
        {"holder": name, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    ).encode()


async def ensure_bucket(js: JetStreamContext, ttl: float = TTL, replicas: int = 1) -> KeyValue:
    """``replicas``: R3 on a hub NATS cluster (``HubConfig.js_replicas``)."""
    try:
        return await js.key_value(LEASE_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=LEASE_BUCKET,
                history=1,
                ttl=ttl,
                storage=StorageType.FILE,
                replicas=replicas,
                description="the hub control-plane owner's lease (docs/architecture.md)",
            )
        )


async def holder(kv: KeyValue) -> str | None:
    """The name in the current lease, or None when nobody owns."""
    try:
        entry = await kv.get(LEASE_KEY)
    except Exception:  # KeyNotFoundError, KeyDeletedError
        return None
    if entry.value is None:
        return None
    try:
        return str(json.loads(entry.value)["holder"])
    except (ValueError, KeyError, TypeError):
        return None


class Lease:
    """Campaign for the lease under ``name``; ``on_acquired`` runs once it is ours."""

    def __init__(
        self,
        js: JetStreamContext,
        name: str,
        on_acquired: Callable[[], Awaitable[None]],
        *,
        ttl: float = TTL,
        replicas: int = 1,
    ) -> None:
        self.js = js
        self.replicas = replicas
        self.name = name
        self.on_acquired = on_acquired
        self.ttl = ttl
        self.clock = LeaseClock(ttl=ttl)
        self.owner = False
        self.lost = asyncio.Event()
        self._kv: KeyValue | None = None
        self._revision: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._kv = await ensure_bucket(self.js, self.ttl, self.replicas)
        self._task = asyncio.create_task(self._run(), name="hub-lease")

    async def _run(self) -> None:
        assert self._kv is not None
        kv = self._kv
        while not self.owner:
            try:
                self._revision = await kv.create(LEASE_KEY, holder_doc(self.name))
            except KeyWrongLastSequenceError:
                await asyncio.sleep(POLL_EVERY)  # someone owns it
                continue
            except Exception as exc:
                log.warning("lease create failed: %s", exc)
                await asyncio.sleep(POLL_EVERY)
                continue
            self.clock.renewed(time.monotonic())
            self.owner = True
        log.info("%s owns the control plane (lease revision %s)", self.name, self._revision)
        try:
            await self.on_acquired()
        except Exception:
            log.exception("starting the control plane failed; giving the lease up")
            self.lost.set()
            return
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                self._revision = await kv.update(
                    LEASE_KEY, holder_doc(self.name), last=self._revision
                )
                self.clock.renewed(time.monotonic())
                continue
            except KeyWrongLastSequenceError:
                log.error("%s lost the control-plane lease to another worker", self.name)
            except Exception as exc:
                if not self.clock.expired(time.monotonic()):
                    log.warning("lease renewal failed: %s; retrying", exc)
                    continue
                log.error("%s could not renew the control-plane lease in time", self.name)
            self.owner = False
            self.lost.set()
            return

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        if self.owner and self._kv is not None and self._revision is not None:
            # Hand over now rather than after the TTL.
            with contextlib.suppress(Exception):
                await self._kv.delete(LEASE_KEY, last=self._revision)
            self.owner = False
