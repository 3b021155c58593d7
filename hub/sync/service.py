"""``SyncService``: the hub side of device sync as one object the hub starts and stops.

Start order (after the operator API, before ``Hub.components``): the report stream and the
``desired`` bucket are created or verified; the desired writer publishes every device once
(only what changed since the DB recorded it written; forced when the bucket was just
created or is behind the recorded generations: a wiped or restored JetStream store must not
leave devices without their documents); then ingest, presence and enrollment subscribe; the
API gains the sync verbs, and sync subscribes to the hub's event bus (``hub.bus``) for the
operators' changes (desired state, decommissions). A periodic re-publish (``REPUBLISH_EVERY``)
is the safety net for a change whose subscriber failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from hub import natsconf
from hub.api.handlers import Caller, Change, Outcome
from hub.api.notices import MAX_IDS
from hub.api.validate import device_id as valid_device_id
from hub.bus import DESIRED_STALE, ORIGIN_API, Event
from hub.context import HubContext
from hub.store import Store
from hub.sync.apply import RowHandler
from hub.sync.audit import Audit
from hub.sync.desired_kv import DesiredWriter
from hub.sync.deviceauth import DeviceAuth
from hub.sync.devrpc import DeviceRpc
from hub.sync.enroll import Enrollment
from hub.sync.ingest import Ingest
from hub.sync.presence import Presence
from hub.sync.streams import ensure_desired_bucket, ensure_report_stream
from sbutil.tasks import cancel_and_wait

log = logging.getLogger(__name__)

REPUBLISH_EVERY = 300.0
ORIGIN = "sync"  # this side's name on the event bus


def approve_reenroll(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    device_id = valid_device_id(body["id"])
    with store.tx():
        changed = store.approve_reenroll(device_id)
        if changed:
            store.add_event(device_id, "reenroll_approved", "an operator approved re-enrollment")
    changes = [Change("devices", "reenroll_approved", {"id": device_id})] if changed else []
    return Outcome({"id": device_id, "changed": changed}, changes)


class SyncService:
    def __init__(self) -> None:
        self.hub: HubContext | None = None
        self.desired: DesiredWriter | None = None
        self.ingest: Ingest | None = None
        self.presence: Presence | None = None
        self.enrollment: Enrollment | None = None
        # Device JWTs: issued at enrollment and renewed in JWT mode; in password mode only
        # for devices moving to their own key ahead of the switch.
        self.auth: DeviceAuth | None = None
        self.rpc: DeviceRpc | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        # Handed to ingest before it consumes anything (hub.sync.apply.RowHandler), so no
        # row applied after a restart escapes them: rollouts keep every deployment verdict.
        self.row_handlers: list[RowHandler] = []
        # False in a hub worker: the worker's own partition ingest runs apart from the
        # control plane (hub.app.Hub.start_worker), with these row handlers.
        self.run_ingest = True
        # False in a hub worker too: each worker listens to its partition's heartbeats
        # (hub.app.Hub.start_worker); the owner's presence only sweeps, from ``since`` (its
        # process start, monotonic).
        self.listen_presence = True
        self.presence_since: float | None = None

    async def start(self, hub: HubContext) -> None:
        assert hub.nc is not None and hub.store is not None and hub.api is not None
        self.hub = hub
        nc, store, api, metrics = hub.nc, hub.store, hub.api, hub.metrics

        async def notify(kind: str, action: str, data: dict[str, Any]) -> None:
            await api.publish_change(kind, action, data, origin=ORIGIN)

        js = nc.jetstream()
        # R3 on a hub NATS cluster (hub.config.HubConfig.js_replicas).
        if self.run_ingest:
            await ensure_report_stream(js, replicas=hub.cfg.js_replicas)
        kv, created = await ensure_desired_bucket(js, hub.cfg.js_replicas)

        async def written(gens: dict[str, int]) -> None:
            metrics.desired_writes.inc(len(gens))
            # The one source of the desired notice, whoever asked for the write (an
            # operator's change, the rollout controller, enrollment, the periodic re-publish):
            # it names exactly the documents that changed, so a write that changed none is
            # silent. A start-up rewrite of a big fleet says "many" instead of every id.
            ids = sorted(gens) if len(gens) <= MAX_IDS else None
            await notify("desired", "changed", {"devices": ids})

        self.desired = DesiredWriter(kv, store, hub.call, on_written=written, nc=nc)
        # Trust what the DB records as written only when the bucket is the one it was written
        # to: then a restart puts just what changed (seconds with 100 000 devices).
        force = created or not await self.desired.bucket_holds_records()
        if force and not created:
            log.warning("KV bucket is behind the generations the hub recorded; rewriting all")
        await self.desired.publish(None, force=force)

        async def applied(devices: set[str]) -> None:
            await notify("reported", "changed", {"devices": sorted(devices)})

        if self.run_ingest:
            self.ingest = Ingest(js, store, hub.call, metrics, on_applied=applied)
            self.ingest.applier.row_handlers.extend(self.row_handlers)
            await self.ingest.start()
        audit = Audit(js, store, hub.call, metrics)
        self.presence = Presence(
            nc,
            store,
            hub.call,
            metrics,
            notify,
            grace=float(hub.cfg.offline_grace),
            on_claims=audit.check,
            listen=self.listen_presence,
            since=self.presence_since,
        )
        await self.presence.start()

        async def after_enroll(enrolled: list[tuple[str, dict[str, Any]]]) -> None:
            for device_id, info in enrolled:
                await notify("devices", "enrolled", {"id": device_id, "again": info["again"]})
            assert self.desired is not None
            await self.desired.publish([d for d, _ in enrolled])

        cfg = hub.cfg
        if hub.keys is not None:
            self.auth = DeviceAuth(
                nc,
                hub.sys_nc,
                store,
                hub.call,
                metrics,
                hub.keys,
                ttl=cfg.device_jwt_ttl,
                bootstrap_url=natsconf.client_url(
                    cfg, natsconf.ENROLL_USER, hub.sec.enroll_password
                ),
                partitions=cfg.workers,
            )
            await self.auth.start()
            # The account JWT with every revocation, also one the resolver lost.
            await self.auth.push_account()
        self.enrollment = Enrollment(
            nc,
            store,
            hub.call,
            metrics,
            leaf_url=natsconf.leaf_url(cfg),
            hub_url=natsconf.hub_url(cfg),
            leaf_urls=natsconf.leaf_urls(cfg) if cfg.clustered else (),
            hub_urls=natsconf.hub_urls(cfg) if cfg.clustered else (),
            reload_users=hub.reload_device_users,
            after_enroll=after_enroll,
            auth=self.auth if cfg.jwt_auth else None,
        )
        await self.enrollment.start()

        self.rpc = DeviceRpc(nc, store, hub.call, metrics)
        for verb, handler in self.rpc.handlers().items():
            api.register_async(verb, handler)
        api.register("devices.approve_reenroll", approve_reenroll)
        # The operators' changes only: what the hub changes itself it publishes itself.
        self._unsubscribe = hub.bus.subscribe(ORIGIN, self._on_change, origins={ORIGIN_API})
        self._task = asyncio.create_task(self._republish_loop(), name="hub-desired-republish")

    async def _on_change(self, change: Event) -> None:
        assert self.desired is not None and self.hub is not None
        if (change.kind, change.action) == DESIRED_STALE:
            await self.desired.publish(change.data.get("devices") or [])
        if change.kind == "signing":
            # A new trust set or signature: every document that carries it changes (only the
            # ones that differ are put).
            await self.desired.publish(None)
        if change.kind == "devices" and change.action == "decommissioned":
            # Its NATS login goes with it: a decommissioned device cannot connect any more
            # (JWT mode: its key revoked in the account JWT, its connection closed).
            if self.auth is not None:
                await self.auth.revoke(str(change.data["id"]))
            if not self.hub.cfg.jwt_auth:
                await self.hub.reload_device_users()

    async def _republish_loop(self) -> None:
        while True:
            await asyncio.sleep(REPUBLISH_EVERY)
            try:
                assert self.desired is not None
                await self.desired.publish(None)
            except Exception:
                log.warning("periodic desired publish failed", exc_info=True)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await cancel_and_wait([self._task])
        for part in (self.enrollment, self.auth, self.presence, self.ingest):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.stop()
