"""``signalbeam-hub run``: the hub process and the order things start and stop in.

Start: configs written -> store opened (migrations) -> nats-server child -> wait for its
JetStream health -> NATS connection -> operator API -> litestream child -> HTTP port.
Stop (SIGTERM/SIGINT): the reverse, children stopped by PID.
The nats-server steps (config, children, health, reloads) are ``hub.natsnodes.NatsNodes``,
a mixin of ``Hub``.

``Hub.sync`` (hub/sync) is started right after the API: report ingest, the desired-state KV
writer (``hub.sync.desired``), enrollment, presence, device RPC verbs. ``Hub.retention``
(hub/retention.py), one of the components, prunes expired telemetry on a timer.

Seams: ``Hub.components`` (anything with async ``start(hub)`` and ``stop()``, started after
the API and stopped before it; ``hub.context`` types what they may use of the hub),
``Hub.reload_nats(users)`` to add per-device NATS users, ``Hub.call`` to run store work on the
single writer thread, and ``Hub.bus`` (``hub.bus``), the in-process event bus every change goes
through: the NATS change notices, sync and the rollout controller are its subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import nats
import nats.errors
from aiohttp import web
from nats.aio.client import Client as NATS

from hub import litestream, natsconf, natsjwt
from hub.api.service import ApiService
from hub.bus import EventBus
from hub.children import Child, find_binary
from hub.config import DataDir, HubConfig, Secrets, check_tls
from hub.context import Component
from hub.errors import Unavailable
from hub.http import make_app
from hub.lease import Lease
from hub.metrics import HubMetrics
from hub.natsnodes import NATS_READY_TIMEOUT, NatsNodes
from hub.retention import RetentionPolicy, RetentionTask
from hub.rollouts.controller import install as install_rollouts
from hub.store import Store
from hub.sync.audit import Audit
from hub.sync.ingest import Ingest
from hub.sync.presence import Presence
from hub.sync.service import ORIGIN as SYNC_ORIGIN
from hub.sync.service import SyncService
from hub.sync.streams import ensure_report_stream
from hub.tls import own_client_context
from hub.vault import Vault
from protocol import natsauth
from protocol.subjects import INBOX_HUB
from sbutil.private import private_db_files, private_dir
from sbutil.tasks import wait_for

log = logging.getLogger(__name__)
T = TypeVar("T")


class Hub(NatsNodes):
    def __init__(self, data: DataDir, cfg: HubConfig, sec: Secrets) -> None:
        self.data = data
        self.cfg = cfg
        self.sec = sec
        self.metrics = HubMetrics()
        self.bus = EventBus()
        # One thread owns the SQLite connection: the store's single writer.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.store: Store | None = None
        self.nc: NATS | None = None
        # The trust chain's keys (hub/natsjwt.py), and in JWT mode the system-account login
        # that pushes the account JWT (revocations; None in password mode).
        self.keys: natsjwt.HubKeys | None = None
        self.sys_nc: NATS | None = None
        self.api: ApiService | None = None
        # One nats-server child per local node (hub.natsconf.local_nodes); ``nats_child`` is
        # the first (the only one without a cluster).
        self.nats_children: list[Child] = []
        self.litestream_child: Child | None = None
        self.components: list[Component] = []
        self.sync = SyncService()
        # Retention prunes old telemetry on a timer (hub/retention.py); a component like any.
        self.retention = RetentionTask(RetentionPolicy.from_config(cfg))
        self.components.append(self.retention)
        self._reload_lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self._extra_users: list[natsconf.NatsUser] = []
        # Hub workers (start_worker): this process's index, its partition's ingest and the
        # control-plane lease it campaigns for. None in the one embedded hub.
        self.worker: int | None = None
        self.ingest: Ingest | None = None
        self.presence: Presence | None = None  # the worker's partition's heartbeats
        self.lease: Lease | None = None

    @property
    def nats_child(self) -> Child | None:
        return self.nats_children[0] if self.nats_children else None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def start(self) -> None:
        """The one embedded hub (``workers = 1``): everything in this process."""
        await self._open_store()
        await self._write_nats_config()
        await self._start_nats_child()
        await self._connect()
        assert self.nc is not None and self.store is not None
        self.api = ApiService(self.nc, self.store, self.executor, self.metrics, self.bus)
        await self.api.start()
        # Rollouts (hub/rollouts): the rollouts.* verbs, the ingest row handler that keeps
        # every deployment verdict (registered before ingest consumes anything), and the
        # controller component, which publishes desired documents through hub.sync.desired
        # once it starts below.
        install_rollouts(self)
        await self._start_control_plane()
        await self._start_http()
        self.data.pid_file.write_text(f"{os.getpid()}\n")
        self._log_ready()

    async def start_nats_only(self) -> None:
        """``signalbeam-hub nats``: the data dir's nats-server for hub workers, nothing else
        (its pid in ``nats/nats-server.pid`` for the owner's config reloads)."""
        await self._open_store()
        await self._write_nats_config()
        await self._start_nats_child()
        # Every local node's pid, one a line (a cluster's nodes each reload).
        pids = [child.pid for child in self.nats_children]
        self.data.nats_pid_file.write_text("".join(f"{pid}\n" for pid in pids))
        self.data.pid_file.write_text(f"{os.getpid()}\n")
        log.info("nats-server for hub workers ready on %s:%s", self.cfg.host, self.cfg.client_port)

    async def start_worker(self, index: int) -> None:
        """Hub worker ``index`` of ``cfg.workers`` (docs/architecture.md "Scale path"): its
        partition's report ingest at once, the control plane once it holds the lease. The
        nats-server is ``signalbeam-hub nats``'s; the DB file is shared (WAL, one writer at
        a time under SQLite's lock)."""
        self.worker = index
        started = time.monotonic()
        await self._open_store()
        self.keys = await self.call(natsjwt.ensure_keys, self.data)
        await self._connect(wait=NATS_READY_TIMEOUT)
        assert self.nc is not None and self.store is not None
        # Not serving until this worker owns: until then it only carries the change notices
        # its ingest makes (the bus's NATS subscriber).
        self.api = ApiService(self.nc, self.store, self.executor, self.metrics, self.bus)
        install_rollouts(self)
        js = self.nc.jetstream()
        await ensure_report_stream(js, self.cfg.workers, self.cfg.js_replicas)
        self.sync.run_ingest = False
        self.sync.listen_presence = False
        self.sync.presence_since = started
        api = self.api

        async def applied(devices: set[str]) -> None:
            await api.publish_change(
                "reported", "changed", {"devices": sorted(devices)}, origin=SYNC_ORIGIN
            )

        async def notify(kind: str, action: str, data: dict[str, Any]) -> None:
            await api.publish_change(kind, action, data, origin=SYNC_ORIGIN)

        self.ingest = Ingest(
            js,
            self.store,
            self.call,
            self.metrics,
            on_applied=applied,
            partition=index,
            partitions=self.cfg.workers,
        )
        self.ingest.applier.row_handlers.extend(self.sync.row_handlers)
        await self.ingest.start()
        # Its partition's heartbeats (the account mapping sends them here); the sweep is
        # the owner's (hub.sync.presence).
        self.presence = Presence(
            self.nc,
            self.store,
            self.call,
            self.metrics,
            notify,
            grace=float(self.cfg.offline_grace),
            on_claims=Audit(js, self.store, self.call, self.metrics).check,
            sweep=False,
            partition=index,
            partitions=self.cfg.workers,
        )
        await self.presence.start()
        await self._start_http()
        self.lease = Lease(js, f"worker-{index}", self._own, replicas=self.cfg.js_replicas)
        await self.lease.start()
        log.info(
            "hub worker %d/%d ready: ingest partition %d, http %s:%s",
            index,
            self.cfg.workers,
            index,
            self.cfg.http_host,
            self.cfg.http_port,
        )

    async def _own(self) -> None:
        """This worker won the lease: the operator API, sync (minus ingest), components."""
        assert self.api is not None
        if self.cfg.jwt_auth:
            self._jwt_secrets()
            await self._connect_system()
        await self.api.start()
        if not self.cfg.jwt_auth:
            # The config `signalbeam-hub nats` wrote may predate this worker count: rewrite
            # it with the heartbeat mapping for ``workers`` (JWT mode: the account JWT the
            # sync pushes at start carries it).
            await self.reload_device_users()
        await self._start_control_plane()
        log.info("worker %s is the control-plane owner", self.worker)

    async def _open_store(self) -> None:
        # Before anything starts: a bad leaf or client certificate is a config error naming
        # the field, not a nats-server that exits with the reason only in its own log.
        check_tls(self.cfg, self.data)
        # 0700 dir, 0600 DB/WAL/SHM, also for a data dir made by an older hub (issue 19).
        private_dir(self.data.root)
        private_db_files(self.data.db)
        self.store = await self.call(Store.open, self.data.db)
        self.store.require_signed_default = self.cfg.require_signed_bundles
        # The secrets' key, beside the DB and never in it (made here for a hub from before).
        self.store.vault = Vault.load_or_create(self.data.vault_key)
        await self.call(self.store.trust_set)  # fills the copy enrollment replies carry
        log.info("store open at %s", self.data.db)

    def _own_servers(self) -> list[str]:
        """Every node, the local ones by loopback: the connection fails over when one dies."""
        scheme = natsconf.client_scheme(self.cfg)
        local = {n.index for n in natsconf.local_nodes(self.cfg)}
        return [
            f"{scheme}://127.0.0.1:{n.client_port}"
            if n.index in local
            else f"{scheme}://{natsconf.bracket(n.host)}:{n.client_port}"
            for n in natsconf.nodes(self.cfg)
        ]

    def _tls(self) -> dict[str, Any]:
        if self.cfg.client_tls:
            # The client listener is TLS-only, this connection included (docs/hub.md).
            return {"tls": own_client_context(self.data.path(self.cfg.client_tls_cert))}
        return {}

    async def _connect(self, wait: float = 0.0) -> None:
        """The hub's NATS connection (``wait``: seconds to keep trying a server that is not
        up yet, a worker started beside ``signalbeam-hub nats``)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self.nc = await nats.connect(
                    self._own_servers(),
                    user=natsconf.HUB_USER,
                    password=self.sec.hub_password,
                    name="signalbeam-hub"
                    if self.worker is None
                    else f"signalbeam-hub-worker-{self.worker}",
                    # Devices may publish replies only under this prefix (hub/natsconf.py).
                    inbox_prefix=INBOX_HUB,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    **natsauth.auth_options("", self.sec.hub_password),
                    **self._tls(),
                )
                break
            except (OSError, nats.errors.Error, TimeoutError):
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.5)
        if self.worker is None:
            await self._connect_system()

    async def _connect_system(self) -> None:
        if self.cfg.jwt_auth and self.keys is not None:
            self.sys_nc = await nats.connect(
                self._own_servers(),
                name="signalbeam-hub-system",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                **natsauth.bearer_options(natsjwt.system_user_jwt(self.keys)),
                **self._tls(),
            )

    async def _start_control_plane(self) -> None:
        # Sync before the other components: they (rollouts) call hub.sync.desired.
        await self.sync.start(self)
        for component in self.components:
            await component.start(self)
        if self.cfg.litestream:
            litestream.write(self.cfg, self.data)
            binary = find_binary("litestream", self.cfg.litestream_bin)
            self.litestream_child = Child(
                "litestream",
                litestream.replicate_argv(binary, self.data),
                self.data.logs / "litestream.log",
                self._on_restart,
            )
            await self.litestream_child.start()

    async def _start_http(self) -> None:
        app = make_app(self.metrics, self.readiness, self._before_scrape)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.cfg.http_host, self.cfg.http_port).start()

    def _log_ready(self) -> None:
        log.info(
            "hub ready: nats %s:%s (%s), leafnodes %s:%s (%s), http %s:%s",
            self.cfg.host,
            self.cfg.client_port,
            "TLS" if self.cfg.client_tls else "plain",
            self.cfg.host,
            self.cfg.leafnode_port,
            "TLS" if self.cfg.leaf_tls else "plain",
            self.cfg.http_host,
            self.cfg.http_port,
        )

    async def readiness(self) -> list[str]:
        problems = []
        # A cluster keeps serving with one node down (its child restarts it): ready while any
        # local node runs and the hub's connection is up.
        if self.worker is None and not any(child.running for child in self.nats_children):
            problems.append("nats-server is not running")
        if self.nc is None or not self.nc.is_connected:
            problems.append("not connected to NATS")
        if (
            self.cfg.litestream
            and self._owns()
            and (self.litestream_child is None or not self.litestream_child.running)
        ):
            problems.append("litestream is not running")
        if self.store is None:
            problems.append("store not open")
        else:
            try:
                await self.call(self.store.scalar, "SELECT 1")
            except Exception as exc:
                problems.append(f"store unusable: {exc}")
        for ingest in (self.sync.ingest, self.ingest):
            if ingest is not None and (stuck := ingest.stuck()):
                problems.append(stuck)
        return problems

    def _owns(self) -> bool:
        """Whether this process runs the control plane (always, for the one hub)."""
        return self.worker is None or (self.lease is not None and self.lease.owner)

    async def _before_scrape(self) -> None:
        if self.store is not None:
            rows = await self.call(
                self.store.rows, "SELECT status, count(*) AS n FROM devices GROUP BY status"
            )
            self.metrics.set_device_counts({r["status"]: r["n"] for r in rows})
            self.metrics.quarantined_devices.set(
                await self.call(self.store.scalar, "SELECT count(*) FROM quarantined_devices")
            )
        for child in (*self.nats_children, self.litestream_child):
            if child is not None:
                self.metrics.child_up.labels(child.name).set(1 if child.running else 0)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        for component in reversed(self.components):
            with contextlib.suppress(Exception):
                await component.stop()
        with contextlib.suppress(Exception):
            await self.sync.stop()
        if self.lease is not None:
            # After the control plane stopped: a standby may take over now.
            await self.lease.stop()
        for part in (self.presence, self.ingest):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.stop()
        await self.bus.close()
        if self.api is not None:
            with contextlib.suppress(Exception):
                await self.api.stop()
        # No writer is left: litestream's shutdown sync now carries every commit.
        if self.litestream_child is not None:
            await self.litestream_child.stop()
        if self.sys_nc is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await wait_for(self.sys_nc.close(), 5)
        if self.nc is not None:
            # close, not drain: the API is already stopped, and drain can hang or raise
            # CancelledError from inside nats-py when the server went away first.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await wait_for(self.nc.close(), 5)
        for child in reversed(self.nats_children):
            await child.stop()
        if self.store is not None:
            await self.call(self.store.close)
        self.executor.shutdown(wait=True)
        if self.worker is None:
            with contextlib.suppress(FileNotFoundError):
                self.data.pid_file.unlink()
        log.info("hub stopped")


class LeaseLost(Unavailable):
    """A worker that held the control-plane lease could not keep it: it exits, so it cannot
    go on acting as a second owner (its supervisor starts it again as a standby)."""


async def run(
    data: DataDir,
    cfg: HubConfig,
    sec: Secrets,
    *,
    worker: int | None = None,
    nats_only: bool = False,
) -> None:
    """``signalbeam-hub run`` (the one hub, or ``worker``) and ``signalbeam-hub nats``."""
    hub = Hub(data, cfg, sec)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if nats_only:
            await hub.start_nats_only()
        elif worker is not None:
            await hub.start_worker(worker)
        else:
            await hub.start()
        waits = [asyncio.ensure_future(stop.wait())]
        if hub.lease is not None:
            waits.append(asyncio.ensure_future(hub.lease.lost.wait()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if hub.lease is not None and hub.lease.lost.is_set():
            raise LeaseLost("the control-plane lease was lost; exiting")
        log.info("signal received; shutting down")
    finally:
        await hub.stop()
