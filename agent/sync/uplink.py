"""Uplink: drain the SQLite outbox to the hub's report stream, exactly once in effect.

Rows are read oldest first, packed several per message (``agent.sync.batching``), published
with JetStream ``publish_async`` so a whole window is in flight at once, and marked sent only
up to the newest batch whose PubAck arrived with every earlier batch also acknowledged. Any
failure (no responders because the leaf link is down, ack timeout, a closed connection) stops
the window, cancels the rest, marks the link lost and backs off; the unacknowledged rows stay
pending and are sent again, and the hub drops the replay by its per-device, per-epoch
``last_applied_seq``. Nothing here uses core NATS publish: a core publish on a leaf whose link
is down is silently lost.

No ``Nats-Msg-Id``: the stream deduplicates on it across every device, and the ids were
predictable, so another device could publish ours first and make the stream answer
"duplicate" to our real batches. For the same reason a PubAck saying ``duplicate`` (which a
publish without an id never gets) is not taken as delivery: the rows stay pending.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.client import JetStreamContext

from agent.store import Store
from agent.sync.batching import Batch, pack
from agent.sync.link import LinkState
from agent.sync.pacing import should_send
from protocol.report import MAX_REPORT_BYTES, MAX_ROWS_PER_REPORT
from protocol.subjects import REPORT_STREAM, report
from sbutil.tasks import wait_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UplinkSettings:
    batch_bytes: int = 64 * 1024  # per message; small enough that one retry is cheap
    batch_rows: int = 500
    window_rows: int = 5000  # rows read from SQLite and put in flight per round
    window_bytes: int = 4 * 1024 * 1024
    ack_timeout: float = 5.0
    idle_poll: float = 1.0  # seconds between outbox checks when it is empty
    backoff_min: float = 0.5
    backoff_max: float = 5.0  # offline, a restored link is noticed within this


@dataclass
class UplinkStats:
    rows_sent: int = 0
    batches_sent: int = 0
    duplicates: int = 0  # PubAcks saying "duplicate": not trusted as delivery (never expected)
    bytes_sent: int = 0
    failures: int = 0
    last_sent_seq: int | None = None
    last_ack_at: float | None = None
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Uplink:
    def __init__(
        self,
        store: Store,
        js: JetStreamContext,
        device_id: str,
        link: LinkState,
        settings: UplinkSettings | None = None,
        *,
        report_link: bool = True,
    ) -> None:
        # report_link=False when something better watches the link (the leaf's /leafz):
        # then a failure here (e.g. a missing stream) must not flip the link state.
        self.report_link = report_link
        self.store = store
        self.js = js
        self.device_id = device_id
        self.link = link
        self.settings = settings or UplinkSettings()
        if self.settings.batch_bytes > MAX_REPORT_BYTES:
            raise ValueError(f"batch_bytes must be at most {MAX_REPORT_BYTES}")
        self.subject = report(device_id)
        self.stats = UplinkStats()
        self._kick = asyncio.Event()
        # Last seq acknowledged in this session: the ``prev_seq`` of the next window, so the
        # hub can tell a batch that overtook an earlier (failed, resent) one. 0 = no claim.
        self._acked = 0
        self._epoch: str | None = None
        self._epoch_read = False
        self._log_extra = {"device": device_id}
        # Metered pacing (agent.sync.pacing): how long metrics rows may wait to share a
        # message with later rows; 0: every row goes at once. Set by the sync service.
        self.flush_after = 0.0
        self.clock: Callable[[], float] = time.time

    def kick(self) -> None:
        """Ask for a drain now (e.g. right after an important event was recorded)."""
        self._kick.set()

    async def run(self) -> None:
        backoff = self.settings.backoff_min
        while True:
            try:
                sent = await self.drain_once()
            except asyncio.CancelledError:
                raise
            except _LinkDown as exc:
                self.stats.failures += 1
                if str(exc) != self.stats.last_error:  # once per new reason, not per retry
                    log.warning("uplink paused: %s", exc, extra=self._log_extra)
                self.stats.last_error = str(exc)
                if self.report_link:
                    self.link.lost(str(exc))
                if self.link.online:
                    await asyncio.sleep(backoff)
                else:
                    # Wake early when another task sees the link come back.
                    await self.link.wait_online(backoff)
                backoff = min(backoff * 2, self.settings.backoff_max)
                continue
            except Exception:
                self.stats.failures += 1
                log.exception("uplink round failed", extra=self._log_extra)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.backoff_max)
                continue
            backoff = self.settings.backoff_min
            if sent == 0:
                self._kick.clear()
                try:
                    await wait_for(self._kick.wait(), self.settings.idle_poll)
                except TimeoutError:
                    pass

    async def drain_once(self) -> int:
        """Send one window of pending rows; returns rows acknowledged (0 when none pending)."""
        s = self.settings
        rows = await self.store.read(Store.outbox_pending, s.window_rows, s.window_bytes)
        if not rows:
            return 0
        if self.flush_after > 0 and not should_send(
            [r.kind for r in rows], rows[0].created_at, self.clock(), self.flush_after
        ):
            return 0  # only rollups, none old enough: let them wait for company
        if not self._epoch_read:  # fixed for the store's life: read once
            self._epoch = await self.store.read(Store.outbox_epoch)
            self._epoch_read = True
        raw = [(r.seq, r.kind, r.created_at, r.payload_json) for r in rows]
        batches = pack(
            self.device_id,
            raw,
            max_bytes=s.batch_bytes,
            max_rows=min(s.batch_rows, MAX_ROWS_PER_REPORT),
            prev_seq=self._acked if self._acked < rows[0].seq else 0,
            epoch=self._epoch,
        )
        return await self._send(batches)

    async def _send(self, batches: list[Batch]) -> int:
        in_flight: list[tuple[Batch, asyncio.Future[Any]]] = []
        acked_rows = 0
        acked_seq: int | None = None
        try:
            for b in batches:
                fut = await self.js.publish_async(
                    self.subject,
                    b.body,
                    wait_stall=self.settings.ack_timeout,
                    stream=REPORT_STREAM,
                )
                in_flight.append((b, fut))
            for b, fut in in_flight:
                try:
                    ack = await wait_for(fut, self.settings.ack_timeout)
                except (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError):
                    raise _LinkDown("no responders for the report stream (hub link down)") from None
                except TimeoutError:
                    raise _LinkDown(f"no PubAck within {self.settings.ack_timeout}s") from None
                except nats.js.errors.APIError as exc:
                    raise _LinkDown(f"report stream refused the batch: {exc}") from None
                if getattr(ack, "duplicate", False):
                    # The stream says it already holds this message, yet we sent no id to
                    # match: it did not store it, so it is not delivered. Keep the rows.
                    self.stats.duplicates += 1
                    raise _LinkDown(
                        f"report stream answered 'duplicate' for rows {b.first_seq}..{b.last_seq}"
                        " (sent without a message id); not counted as delivered"
                    )
                acked_seq = b.last_seq
                acked_rows += b.rows
                self.stats.batches_sent += 1
                self.stats.bytes_sent += len(b.body)
        except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError) as exc:
            raise _LinkDown(f"local NATS connection unusable: {exc!r}") from None
        except nats.js.errors.TooManyStalledMsgsError:
            raise _LinkDown("publish window stalled") from None
        finally:
            for _, fut in in_flight:
                if not fut.done():
                    fut.cancel()  # releases nats-py's pending-publish slot
                elif not fut.cancelled():
                    fut.exception()  # retrieved: these rows are simply sent again later
            if acked_seq is not None:
                # Only a contiguous acknowledged prefix is marked: a later batch's ack never
                # covers an earlier batch that failed.
                await self.store.write(Store.outbox_mark_sent, acked_seq)
                self._acked = acked_seq
                self.stats.rows_sent += acked_rows
                self.stats.last_sent_seq = acked_seq
                self.stats.last_ack_at = time.time()
                self.stats.last_error = None
                if self.report_link:
                    self.link.contact()
        return acked_rows


class _LinkDown(Exception):
    """Internal: the round stopped because the hub was unreachable."""
