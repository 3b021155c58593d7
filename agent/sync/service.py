"""``SyncService``: the one object the daemon starts and stops for everything hub-related.

Modes, from the agent config:
- ``leaf`` (default once enrolled): supervise a local leaf nats-server linked to the hub with
  the enrolled credentials, and connect to it on 127.0.0.1.
- ``direct``: ``[hub] url`` is set: connect there (an external leaf, or the hub itself, with
  the enrolled credentials when a credentials file exists).
- not enrolled and no ``[hub] url``: sync stays off (local mode).

Wiring into the daemon: ``agent.add_task(agent.sync.service.sync_hook)``.

``SyncService`` is built of parts, one module per concern, each part a base of the next
(one chain, so every part sees the state and methods below it and mypy checks them):
- ``agent.sync.settings``: ``SyncSettings`` and ``settings_from_config`` (from the config);
- ``agent.sync.service_base``: the shared state and the store reads;
- ``agent.sync.login``: JWT renewal, the move to the device's own nkey, the leaf's login;
- ``agent.sync.pacing_loop``: the metered pacing loop (agent.sync.pacing's choices applied);
- ``agent.sync.link_watch``: what keeps ``online`` true (staleness, /leafz, the fallback);
- ``agent.sync.status_report``: the status document and the status file;
- here: start (leaf or direct link wiring), connect, run, stop, and the daemon hook;
- ``agent.sync.rpc_handlers``: the device's RPC callbacks over the running agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from nats.aio.client import Client as NATS

from agent.context import AgentContext
from agent.errors import AgentError
from agent.sync import gate
from agent.sync.downlink import Downlink
from agent.sync.errors import LeafError
from agent.sync.heartbeat import HeartbeatTask
from agent.sync.intake import Intake
from agent.sync.jwtauth import write_creds
from agent.sync.leaf import LeafServer
from agent.sync.link import connect
from agent.sync.rpc import RpcServer
from agent.sync.rpc_handlers import agent_rpc_handlers as agent_rpc_handlers  # re-exported
from agent.sync.service_base import LOGIN_SWITCH_GAP as LOGIN_SWITCH_GAP  # re-exported
from agent.sync.service_base import Trigger as Trigger  # re-exported
from agent.sync.settings import Mode as Mode  # re-exported
from agent.sync.settings import SyncSettings as SyncSettings  # re-exported
from agent.sync.settings import settings_from_config as settings_from_config  # re-exported
from agent.sync.status import read_status_file as read_status_file  # re-exported
from agent.sync.status_report import StatusPart
from agent.sync.uplink import Uplink
from protocol import natsauth
from protocol.api import MAX_DEVICE_WAIT
from sbutil.seal import SealKey
from sbutil.tasks import cancel_and_wait, wait_for

log = logging.getLogger(__name__)


class SyncService(StatusPart):
    """Start, connect, run and stop; each concern is a part it builds on (module docstring)."""

    async def start(self, stop: asyncio.Event | None = None) -> None:
        s = self.settings
        user = password = None
        auth: dict[str, Any] = {}
        self._creds = s.credentials
        jwt = s.credentials is not None and s.credentials.jwt_auth
        if jwt:
            assert s.credentials is not None
            if s.mode == "leaf":
                await asyncio.to_thread(write_creds, self._creds_file, s.credentials)
            self._start_renewer(s.credentials)
        if s.mode == "leaf":
            assert s.credentials is not None
            # A device holding both a password and a JWT (it moved to its own key while the
            # hub was in password mode) tries the JWT first; the leaf's "Authorization
            # Violation" switches it to the other (``_leaf_down``).
            self._leaf_jwt = jwt
            self.pacing = await self._choose_pacing()
            self.leaf = LeafServer(self._leaf_settings(jwt, s.leaf_port))
            await self.leaf.start()
            url = self.leaf.url
        else:
            assert s.url is not None
            url = s.url
            if self.renewer is not None:
                renewer, seed = self.renewer, s.credentials.nats_seed if s.credentials else ""
                # Read at every (re)connect: a renewed JWT is used from the next one on.
                # nats-py signs with it when the server asks (a JWT-mode hub sends a nonce)
                # and sends the password otherwise (a password-mode hub sends none).
                auth = natsauth.device_options(lambda: renewer.jwt, lambda: seed)
            if s.credentials is not None and s.credentials.nats_password:
                user, password = s.credentials.nats_user, s.credentials.nats_password
        self.nc = await self._connect(url, user, password, stop, auth)
        if self.nc is None:
            return
        js = self.nc.jetstream(domain=s.js_domain)
        # Online means the hub answered (the heartbeat's reply, a PubAck, a direct get):
        # with our own leaf the heartbeat is the liveness check and the uplink's and the
        # downlink's failures must not flip the link (a missing stream is not a dead link);
        # without one, the desired-state read is a probe of its own as well.
        watched = self.leaf is not None
        self.uplink = Uplink(
            self.store, js, self.device_id, self.link, s.uplink, report_link=not watched
        )
        self.intake = (
            None
            if s.trust_path is None
            else Intake(
                self.store,
                s.trust_path,
                enrolled=s.credentials.trust if s.credentials else None,
                pinned=s.pinned_keys,
                require=s.require_signed,
                device_id=self.device_id,
                # The sealing key lives beside the trust set, in the data dir.
                seal_key=lambda: SealKey.load(s.trust_path.parent) if s.trust_path else None,
            )
        )
        self.downlink = Downlink(
            self.store,
            self.nc,
            js,
            self.device_id,
            self.link,
            self.trigger,
            last_revision=await self._last_hub_generation(),
            settings=s.downlink,
            report_link=not watched,
            intake=self.intake,
        )
        self.heartbeat = HeartbeatTask(
            self.nc,
            self.device_id,
            self.link,
            self._heartbeat_state,
            s.heartbeat_interval,
            ack_timeout=s.heartbeat_ack_timeout,
            # A hub that does not answer heartbeats (older, or a bare nats-server): its
            # JetStream answering the direct get of our key is an end-to-end answer too.
            fallback=self._hub_answers_a_read,
        )
        if self.handlers is not None:
            # The device never gives up before the longest wait a caller may ask the hub for.
            self.rpc = RpcServer(self.nc, self.device_id, self.handlers, timeout=MAX_DEVICE_WAIT)
            await self.rpc.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.downlink.run(), name="sync-downlink"),
            loop.create_task(self.uplink.run(), name="sync-uplink"),
            loop.create_task(self.heartbeat.run(), name="sync-heartbeat"),
        ]
        self._tasks.append(loop.create_task(self._watch_link(), name="sync-link-watch"))
        self._tasks.append(loop.create_task(self._pace(), name="sync-pacing"))
        if s.status_path is not None:
            self._tasks.append(loop.create_task(self._persist_status(), name="sync-status"))
        if self.renewer is not None:
            self._tasks.append(loop.create_task(self.renewer.run(), name="sync-jwt-renew"))
        elif s.credentials is not None and s.credentials.nats_password:
            self._tasks.append(loop.create_task(self._migrate(), name="sync-nkey-migrate"))
        self.started_at = time.time()
        log.info("sync started (%s mode via %s)", s.mode, url.split("@")[-1], extra=self._extra)

    async def _connect(
        self,
        url: str,
        user: str | None,
        password: str | None,
        stop: asyncio.Event | None,
        auth: dict[str, Any] | None = None,
    ) -> NATS | None:
        # nats-py retries forever only after a first successful connect; retry that here.
        while True:
            try:
                # Direct mode talks to the hub itself, so the hub's CA applies here; the
                # local leaf is plain loopback and does its own TLS upstream.
                ca = self.settings.leaf_ca_file if self.leaf is None else None
                # Direct mode: a hub cluster's nodes too, to fail over to (only a cluster
                # sends hub_urls: a single hub's hub_url must not bypass the configured url).
                creds = self.settings.credentials
                more = list(creds.hub_urls) if self.leaf is None and creds else []
                return await connect(
                    url,
                    self.device_id,
                    user=user,
                    password=password,
                    ca_file=ca,
                    auth=auth,
                    more_urls=more,
                )
            except Exception as exc:
                self.link.lost(f"cannot connect to {url.split('@')[-1]}: {exc}")
                log.warning("NATS connect failed: %s; retrying", exc, extra=self._extra)
            if stop is None:
                await asyncio.sleep(self.settings.connect_retry)
            else:
                with contextlib.suppress(TimeoutError):
                    await wait_for(stop.wait(), self.settings.connect_retry)
                    return None

    async def stop(self) -> None:
        # Cancelled again while still running: a cancel lost in 3.11's wait_for (sbutil.tasks)
        # hung this stop for ever (the nkey migration's loop went back to sleep).
        await cancel_and_wait(self._tasks)
        self._tasks = []
        if self.rpc is not None:
            await self.rpc.stop()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        if self.leaf is not None:
            await self.leaf.stop()
        self.nc = None
        self.link.lost("stopped")
        if self.settings.status_path is not None:
            status = await self.current_status()
            with contextlib.suppress(OSError):
                self._write_status(self.settings.status_path, status)

    async def run(self, stop: asyncio.Event) -> None:
        """Start (retrying with backoff if the leaf cannot start), run until ``stop``."""
        backoff = 2.0
        try:
            while not stop.is_set():
                try:
                    await self.start(stop)
                    break
                except (LeafError, OSError) as exc:
                    log.error(
                        "sync could not start: %s; retrying in %.0fs",
                        exc,
                        backoff,
                        extra=self._extra,
                    )
                    self.link.lost(f"sync could not start: {exc}")
                    await self.stop()
                with contextlib.suppress(TimeoutError):
                    await wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 60.0)
            await stop.wait()
        finally:
            await self.stop()


# ---------------------------------------------------------------- daemon wiring


async def sync_hook(agent: AgentContext, stop: asyncio.Event) -> None:
    """Daemon hook: ``agent.add_task(sync_hook)``. Sets ``agent.sync`` to the service."""
    # Not enrolled yet: wait for a credentials file (agent.sync.gate), so an enrollment done
    # while the agent runs is picked up without a restart.
    settings: SyncSettings | None = None
    last_error = ""
    while True:
        if not await gate.wait_until_configured(agent.config, stop, agent.device_id):
            return
        try:
            settings = settings_from_config(agent.config)
        except AgentError as exc:  # e.g. an unreadable credentials file: say so, keep looking
            if str(exc) != last_error:
                log.error("%s", exc, extra={"device": agent.device_id})
            last_error = str(exc)
        if settings is not None:
            break
        with contextlib.suppress(TimeoutError):
            await wait_for(stop.wait(), gate.ENROLL_POLL)
            return
    assert agent.store is not None  # hooks start after the daemon opened the store
    svc = SyncService(
        agent.store,
        settings,
        agent.device_id,
        trigger=lambda: agent.notify_desired("hub"),
        handlers=agent_rpc_handlers(agent, lambda: getattr(agent, "sync", None)),
    )
    agent.sync = svc
    await svc.run(stop)
