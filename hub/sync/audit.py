"""Delivery audit: rows a device says reached the stream that the hub never applied.

A heartbeat with ``outbox_pending == 0`` and ``last_seq == N`` is the device's word that the
stream acknowledged every row up to N (the agent marks rows sent only on a PubAck, and reads
both figures in one snapshot). The hub checks that word against what it holds:

1. its position (``device_sync``) is below N (on the store thread);
2. the stream holds no report of that device (``SB_REPORTS`` is a work queue: a report
   leaves it only when the ingest acked or refused it, and it acks after the commit);
3. the position, read again, is still below N.

Then rows position+1..N were acknowledged to the device and will never arrive: something
answered its publishes without storing them (an older agent trusted a "duplicate" PubAck
that another device had provoked with a forged ``Nats-Msg-Id``), or the hub's store went
back (restored from an older replica). That is recorded: a ``sync_lost`` event (once per
device and claim) and ``signalbeam_sync_lost_rows_total``. The position does not move: a
heartbeat is the device's own word, and adopting it could blind the device (every later
row a "replay"); the next report applies with a gap as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js import JetStreamContext

from hub.metrics import HubMetrics
from hub.store import Store
from protocol.subjects import REPORT_STREAM, device_all

log = logging.getLogger(__name__)

StoreCall = Callable[..., Awaitable[Any]]
MAX_CHECKS = 50  # stream lookups per round (a round per presence flush)


def stored_reports(device_id: str) -> str:
    """Every subject the stream may hold a device's reports under: ``sb.dev.<id>.report``
    (one hub) and ``sb.dev.<id>.report.<p>`` (hub workers' partition transform); the stream
    holds nothing else of the device."""
    return device_all(device_id)


def behind(store: Store, claims: dict[str, int]) -> dict[str, tuple[str, int]]:
    """Devices whose claimed ``last_seq`` is above the hub's position: ``{device: (epoch,
    position)}``."""
    out: dict[str, tuple[str, int]] = {}
    for device_id, last_seq in claims.items():
        epoch, pos = store.sync_epoch(device_id)
        if pos < last_seq and store.device_exists(device_id):
            out[device_id] = (epoch, pos)
    return out


def record_lost(store: Store, device_id: str, epoch: str, last_seq: int) -> int:
    """Step 3 and the record: rows lost (0 when the position caught up meanwhile)."""
    with store.tx():
        now_epoch, pos = store.sync_epoch(device_id)
        if now_epoch != epoch or pos >= last_seq:
            return 0
        store.add_event(
            device_id,
            "sync_lost",
            f"rows {pos + 1}..{last_seq} were acknowledged but never reached the hub",
            {"from": pos + 1, "to": last_seq, "epoch": epoch},
            severity="error",
        )
    return last_seq - pos


class Audit:
    def __init__(
        self, js: JetStreamContext, store: Store, call: StoreCall, metrics: HubMetrics
    ) -> None:
        self.js = js
        self.store = store
        self.call = call
        self.metrics = metrics
        self._raised: dict[str, tuple[str, int]] = {}  # device -> (epoch, last_seq) recorded

    async def check(self, claims: dict[str, int]) -> None:
        """``claims``: ``{device: last_seq}`` of heartbeats saying nothing is pending."""
        if not claims:
            return
        suspects: dict[str, tuple[str, int]] = await self.call(behind, self.store, claims)
        for device_id, (epoch, _pos) in list(suspects.items())[:MAX_CHECKS]:
            last_seq = claims[device_id]
            if self._raised.get(device_id) == (epoch, last_seq):
                continue
            try:
                info = await self.js.stream_info(
                    REPORT_STREAM, subjects_filter=stored_reports(device_id)
                )
            except Exception as exc:
                log.debug("stream lookup for the delivery audit failed: %s", exc)
                return
            if sum((info.state.subjects or {}).values()):
                continue  # still on its way (or waiting for an earlier batch)
            lost: int = await self.call(record_lost, self.store, device_id, epoch, last_seq)
            if lost:
                self._raised[device_id] = (epoch, last_seq)
                self.metrics.sync_lost_rows.inc(lost)
                log.error(
                    "%d rows acknowledged to the device never reached the hub (up to %d)",
                    lost,
                    last_seq,
                    extra={"device": device_id},
                )
