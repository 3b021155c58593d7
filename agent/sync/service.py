"""``SyncService``: the one object the daemon starts and stops for everything hub-related.

Modes, from the agent config:
- ``leaf`` (default once enrolled): supervise a local leaf nats-server linked to the hub with
  the enrolled credentials, and connect to it on 127.0.0.1.
- ``direct``: ``[hub] url`` is set: connect there (an external leaf, or the hub itself, with
  the enrolled credentials when a credentials file exists).
- not enrolled and no ``[hub] url``: sync stays off (local mode).

Wiring into the daemon: ``agent.add_task(agent.sync.service.sync_hook)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nats.js.errors
from nats.aio.client import Client as NATS

from agent.context import AgentContext
from agent.errors import AgentError
from agent.runtime.restart import restart_container
from agent.store import Store
from agent.sync import gate
from agent.sync.downlink import Downlink, DownlinkSettings
from agent.sync.enroll import load_credentials, save_credentials
from agent.sync.errors import LeafError, RpcFailure
from agent.sync.gate import credentials_path
from agent.sync.heartbeat import HEARTBEAT_ACK_TIMEOUT, HeartbeatTask, heartbeat_from_status
from agent.sync.intake import TRUST_FILE, Intake
from agent.sync.jwtauth import JwtRenewer, migrate, write_creds
from agent.sync.leaf import LeafServer, LeafSettings
from agent.sync.link import LinkState, connect
from agent.sync.liveness import ack_timeout_for, is_stale, stale_after, unreachable_since
from agent.sync.pacing import LinkUsage, Pacing, pacing_for
from agent.sync.rpc import RpcHandlers, RpcServer
from agent.sync.status import STATUS_FILE
from agent.sync.status import read_status_file as read_status_file  # re-exported
from agent.sync.uplink import Uplink, UplinkSettings
from protocol import natsauth
from protocol.api import MAX_DEVICE_WAIT, RESTART_STOP_TIMEOUT
from protocol.enroll import EnrollReply
from protocol.errors import CONFLICT, NOT_FOUND, UNAVAILABLE
from protocol.heartbeat import Heartbeat
from protocol.metered import format_budget, format_bytes
from protocol.subjects import JS_DOMAIN
from sbutil.seal import SealKey

log = logging.getLogger(__name__)

Mode = Literal["leaf", "direct"]
# At most one switch of the leaf's login (JWT <-> password) per this many seconds: a device
# that neither works for (decommissioned) must not restart its leaf in a tight loop.
LOGIN_SWITCH_GAP = 10.0


@dataclass(frozen=True)
class SyncSettings:
    mode: Mode
    url: str | None = None  # direct mode: where to connect
    credentials: EnrollReply | None = None
    workdir: Path = Path(".")
    leaf_port: int = 0
    heartbeat_interval: float = 30.0
    heartbeat_ack_timeout: float = HEARTBEAT_ACK_TIMEOUT  # capped at half an interval
    uplink: UplinkSettings = field(default_factory=UplinkSettings)
    downlink: DownlinkSettings = field(default_factory=DownlinkSettings)
    connect_retry: float = 2.0
    leaf_check: float = 0.5  # seconds between link checks (local /leafz, PubAcks, staleness)
    # Where the running agent leaves its sync view for other processes (`status` CLI).
    status_path: Path | None = None
    status_every: float = 10.0
    # The [hub] ca_file pinning the hub's certificate (for the leaf link, or for the agent's
    # own connection in direct mode), and a leaf URL that overrides the enrolled one
    # (agent/config.py HubConfig).
    leaf_ca_file: str | None = None
    leaf_url: str | None = None
    # Signed bundles (agent.sync.intake): where the device's trust set is kept, and the
    # config's [signing] keys and require. trust_path None: no check (tests of sync alone).
    trust_path: Path | None = None
    pinned_keys: tuple[str, ...] = ()
    require_signed: bool | None = None
    # JWT mode: where the credentials file lives (the renewed JWT is saved there).
    credentials_path: Path | None = None
    # The config's [metered] budget (bytes per day); the hub's, when it sets one, wins.
    metered_budget: int | None = None

    @property
    def js_domain(self) -> str:
        return self.credentials.js_domain if self.credentials else JS_DOMAIN


def settings_from_config(config: Any) -> SyncSettings | None:
    """``SyncSettings`` for an ``AgentConfig``; None when sync is off (not enrolled)."""
    path = credentials_path(config)
    creds = load_credentials(path) if path.exists() else None
    url = getattr(config.hub, "url", None)
    workdir = Path(config.data_dir) / "leaf"
    status_path = Path(config.data_dir) / STATUS_FILE
    beat = float(getattr(config.hub, "heartbeat_interval", 30.0))
    signing = getattr(config, "signing", None)
    trust: dict[str, Any] = {
        "trust_path": Path(config.data_dir) / TRUST_FILE,
        "pinned_keys": tuple(getattr(signing, "trusted_keys", ())),
        "require_signed": getattr(signing, "require", None),
        "metered_budget": getattr(getattr(config, "metered", None), "budget", None),
    }
    if url:
        return SyncSettings(
            "direct",
            credentials_path=path,
            url=url,
            credentials=creds,
            workdir=workdir,
            heartbeat_interval=beat,
            status_path=status_path,
            leaf_ca_file=getattr(config.hub, "ca_file", None),
            **trust,
        )
    if creds is None:
        return None
    return SyncSettings(
        "leaf",
        credentials_path=path,
        credentials=creds,
        workdir=workdir,
        heartbeat_interval=beat,
        status_path=status_path,
        leaf_ca_file=getattr(config.hub, "ca_file", None),
        leaf_url=getattr(config.hub, "leaf_url", None),
        **trust,
    )


Trigger = Callable[[], Any]


class SyncService:
    def __init__(
        self,
        store: Store,
        settings: SyncSettings,
        device_id: str,
        *,
        trigger: Trigger,
        handlers: RpcHandlers | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.device_id = device_id
        self.trigger = trigger
        self.handlers = handlers
        self.link = LinkState(device_id)
        self.leaf: LeafServer | None = None
        self.nc: NATS | None = None
        self.uplink: Uplink | None = None
        self.downlink: Downlink | None = None
        self.intake: Intake | None = None
        self.heartbeat: HeartbeatTask | None = None
        self.rpc: RpcServer | None = None
        self.renewer: JwtRenewer | None = None
        self._creds: EnrollReply | None = None  # as last saved (a renewal replaces it)
        self._leaf_jwt = False  # whether the leaf logs in with the JWT (else the password)
        self._leaf_switched = -LOGIN_SWITCH_GAP
        self.started_at: float | None = None
        self.pacing: Pacing = pacing_for(
            None,
            heartbeat=settings.heartbeat_interval,
            desired_poll=settings.downlink.poll_interval,
        )
        self.usage = LinkUsage()
        self._tasks: list[asyncio.Task[None]] = []
        self._extra = {"device": device_id}

    # ---------------------------------------------------------------- status

    @property
    def online(self) -> bool:
        return self.link.online

    @property
    def last_contact(self) -> float | None:
        return self.link.last_contact

    async def current_status(self) -> dict[str, Any]:
        """``status()`` with the outbox depth read from the store (on its own thread)."""
        return self.status(await self._outbox_pending())

    def status(self, outbox_pending: int | None = None) -> dict[str, Any]:
        """For ``signalbeam-agent status`` and the HTTP API. ``online`` and ``last_contact``
        are end to end: the hub's last answer (``agent.sync.liveness``). ``outbox_pending``
        is the caller's (``current_status`` reads it); this reads no store."""
        hb = self.heartbeat
        return {
            "mode": self.settings.mode,
            **self.link.to_dict(),
            "unreachable_since": unreachable_since(
                self.link.online, self.link.last_contact, self.started_at
            ),
            "heartbeat_interval": self.settings.heartbeat_interval
            if hb is None
            else hb.current_interval,
            "stale_after": self._stale_after(),
            "leaf": None
            if self.leaf is None
            else {"url": self.leaf.url, "pid": self.leaf.pid, "restarts": self.leaf.restarts},
            "uplink": None if self.uplink is None else self.uplink.stats.to_dict(),
            "outbox_pending": outbox_pending,
            "downlink": None if self.downlink is None else self.downlink.stats.to_dict(),
            "signing": None if self.intake is None else self.intake.status(),
            "heartbeats_sent": 0 if hb is None else hb.sent,
            "heartbeats_answered": 0 if hb is None else hb.acked,
            "heartbeats_unanswered": 0 if hb is None else hb.unanswered,
            "rpc": {} if self.rpc is None else dict(self.rpc.counts),
            "auth": "password"
            if self.renewer is None
            else {
                "mode": "jwt",
                "expires": natsauth.expiry(self.renewer.jwt),
                "renewed": self.renewer.renewed,
                "renew_failures": self.renewer.failures,
            },
            "metered": {**self.pacing.to_dict(), "bytes_day": self.usage.last_day()},
        }

    # ---------------------------------------------------------------- lifecycle

    @property
    def _creds_file(self) -> Path:
        return self.settings.workdir / "device.creds"

    def _save_renewed(self, creds: EnrollReply) -> None:
        """A renewed JWT: the leaf's creds file (read at its next link) and the credentials
        file (read at the next start), both 0600. Direct mode has no creds file: nats-py
        reads the JWT from the renewer at each connect."""
        if self.settings.mode == "leaf":
            write_creds(self._creds_file, creds)
        if self.settings.credentials_path is not None:
            save_credentials(self.settings.credentials_path, creds)
        self._creds = creds

    async def _migrate(self) -> None:
        """A password-enrolled device moves to its own nkey on its first link to a hub that
        signs JWTs (docs/security.md "Moving a fleet to JWT mode"): it makes the key, gets
        its first JWT over its own link, saves both beside its password, and keeps the JWT
        renewed; it logs in with the JWT once the hub no longer takes the password."""
        delay = 30.0
        while self.renewer is None:
            if await self.link.wait_online(60) and self.nc is not None and self._creds:
                try:
                    creds = await migrate(self.nc, self._creds)
                except Exception as exc:
                    log.info("no nkey migration yet: %s", exc, extra=self._extra)
                else:
                    await asyncio.to_thread(self._save_renewed, creds)
                    log.info("moved to its own nkey (JWT held)", extra=self._extra)
                    self._start_renewer(creds)
                    assert self.renewer is not None
                    loop = asyncio.get_running_loop()
                    self._tasks.append(loop.create_task(self.renewer.run(), name="sync-jwt-renew"))
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3600.0)

    async def _switch_leaf_login(self) -> None:
        """Restart the leaf with the other credential, on the same port (the agent's own
        connection reconnects to it)."""
        assert self.leaf is not None
        port = self.leaf.port
        self._leaf_jwt = not self._leaf_jwt
        self._leaf_switched = time.monotonic()
        log.warning(
            "the hub refused the leaf's %s; linking with the %s",
            "JWT" if not self._leaf_jwt else "password",
            "JWT" if self._leaf_jwt else "password",
            extra=self._extra,
        )
        await self.leaf.stop()
        self.leaf = LeafServer(self._leaf_settings(self._leaf_jwt, port))
        await self.leaf.start()

    def _leaf_settings(self, use_jwt: bool, port: int) -> LeafSettings:
        s = self.settings
        creds = self._creds
        assert creds is not None
        return LeafSettings(
            device_id=self.device_id,
            workdir=s.workdir,
            hub_leaf_url=s.leaf_url or creds.leaf_url,
            # A configured leaf_url is the one link (a proxy, a fixed address); else every
            # node of the hub's cluster, so the link fails over.
            more_leaf_urls=() if s.leaf_url else tuple(creds.all_leaf_urls()[1:]),
            ca_file=s.leaf_ca_file,
            user=creds.nats_user,
            password=creds.nats_password,
            credentials=str(self._creds_file) if use_jwt else None,
            listen_port=port,
            ping_interval=self.pacing.leaf_ping,
        )

    def _start_renewer(self, creds: EnrollReply) -> None:
        self.renewer = JwtRenewer(
            creds, self._save_renewed, lambda: self.nc, ca_file=self.settings.leaf_ca_file
        )

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

    async def _choose_pacing(self) -> Pacing:
        """The pacing for the budget in force: the hub's (newest desired revision), else the
        config's (agent.sync.pacing)."""
        try:
            hub_budget = await self.store.read(Store.metered_budget)
        except Exception:  # a store without it (tests' fakes) or a read failure
            hub_budget = None
        budget = hub_budget if hub_budget is not None else self.settings.metered_budget
        return pacing_for(
            budget,
            heartbeat=self.settings.heartbeat_interval,
            desired_poll=self.settings.downlink.poll_interval,
        )

    async def _pace(self) -> None:
        """Every ``status_every`` s: apply the pacing for the budget in force (a hub revision
        may have changed it) and sample the leaf link's traffic for ``bytes_day``."""
        applied: Pacing | None = None
        while True:
            p = await self._choose_pacing()
            if p != applied:
                await self._apply_pacing(p)
                applied = p
            if self.leaf is not None:
                total = await self.leaf.traffic()
                if total is not None:
                    self.usage.sample(time.time(), total)
            await asyncio.sleep(self.settings.status_every)

    async def _apply_pacing(self, p: Pacing) -> None:
        self.pacing = p
        if self.heartbeat is not None:
            self.heartbeat.set_interval(p.heartbeat)
        if self.uplink is not None:
            self.uplink.flush_after = p.flush
        if self.downlink is not None and not self.downlink.report_link:
            # With our own leaf the read is a safety net only (puts are prompted).
            self.downlink.set_poll_interval(p.desired_poll)
        if self.leaf is not None:
            self.leaf.set_ping_interval(p.leaf_ping)
        try:
            await self.store.write(Store.set_upstream_span, p.rollup_span)
        except Exception as exc:
            log.warning("metrics span not set: %s", exc, extra=self._extra)
        if p.budget is not None:
            log.info(
                "metered link: budget %s, tier %d (heartbeat %gs, rollups every %gs, rows of"
                " %ds, estimated %s/day idle)",
                format_budget(p.budget),
                p.tier,
                p.heartbeat,
                p.flush,
                p.rollup_span,
                format_bytes(p.estimate()),
                extra=self._extra,
            )

    async def _hub_answers_a_read(self) -> bool:
        """Whether the hub answers a direct get of our desired key (any answer: a value, "no
        such key", an API error). Only a liveness check: applying what it returns stays the
        downlink's job, so its own bookkeeping (missed prompts) is not disturbed."""
        assert self.downlink is not None
        try:
            await asyncio.wait_for(self.downlink.kv.get(self.device_id), self._fallback_timeout())
        except nats.js.errors.ServiceUnavailableError:
            return False  # JetStream's "no responders": nobody answered
        except nats.js.errors.APIError:
            return True  # e.g. key not found: the hub's JetStream answered
        except Exception:  # no responders, a timeout, a closed local connection
            return False
        return True

    def _ack_timeout(self) -> float:
        hb = self.heartbeat
        s = self.settings
        return (
            ack_timeout_for(s.heartbeat_interval, s.heartbeat_ack_timeout)
            if hb is None
            else hb.ack_timeout
        )

    def _fallback_timeout(self) -> float:
        # Half the heartbeat's own timeout: one probe (heartbeat, then this read) then takes at
        # most 0.75 interval, so "unreachable" comes within 1.75 intervals. Not under 0.5 s: a
        # sub-second interval (tests) must not make a loaded hub look unreachable.
        half = max(0.5, self._ack_timeout() / 2)
        return min(self.settings.downlink.request_timeout, half)

    def _stale_after(self) -> float:
        # The heartbeat's own interval now: longer while nothing changes, or on a metered
        # link (agent.sync.pacing); "online" still means the hub answered the last probe.
        hb = self.heartbeat
        interval = self.settings.heartbeat_interval if hb is None else hb.current_interval
        return stale_after(interval, self._ack_timeout(), self._fallback_timeout())

    async def _watch_link(self) -> None:
        """Every ``leaf_check`` s: a new PubAck counts as an answer; no answer for
        ``stale_after`` s means lost (the safety net behind the heartbeat's own timeout); and
        with our own leaf, its /leafz saying the link is down means lost at once, and the
        link coming back up is confirmed by a heartbeat at once. /leafz saying "up" never
        makes the agent online by itself: a silent link looks up there for minutes."""
        logged: str | None = None
        seen_ack = None if self.uplink is None else self.uplink.stats.last_ack_at
        was_linked = False
        while True:
            ack = None if self.uplink is None else self.uplink.stats.last_ack_at
            if ack is not None and ack != seen_ack:
                seen_ack = ack
                self.link.contact()
            stale = self._stale_after()
            if self.link.online and is_stale(time.time(), self.link.last_contact, stale):
                self.link.lost(f"no answer from the hub for {stale:.0f}s")
            if self.leaf is not None:
                linked = await self.leaf.linked()
                if linked:
                    if not was_linked and not self.link.online and self.heartbeat is not None:
                        self.heartbeat.probe_now()
                    logged = None
                else:
                    logged = await self._leaf_down(logged)
                was_linked = linked
            await asyncio.sleep(self.settings.leaf_check)

    async def _leaf_down(self, logged: str | None) -> str | None:
        assert self.leaf is not None
        # The cause (e.g. "x509: certificate signed by unknown authority") is only in the
        # leaf server's log; surface it in the status and log it once per change.
        cause = await asyncio.to_thread(self.leaf.link_error)
        creds = self._creds
        if (
            cause
            and "authorization violation" in cause.lower()
            and creds is not None
            and creds.nats_jwt
            and creds.nats_password
            and time.monotonic() - self._leaf_switched >= LOGIN_SWITCH_GAP
        ):
            # Holding both: the hub moved to JWT mode (or is still in password mode).
            await self._switch_leaf_login()
            return logged
        reason = "the leaf's link to the hub is down"
        if cause:
            reason += f": {cause}"
            if cause != logged:
                log.warning("leaf link to the hub failing: %s", cause, extra=self._extra)
                logged = cause
        self.link.lost(reason)
        return logged

    async def _persist_status(self) -> None:
        """Write the status file on every online/offline change and every status_every s
        (not on every contact: this may be an SD card)."""
        assert self.settings.status_path is not None
        written: tuple[bool, int] | None = None
        last = 0.0
        while True:
            key = (self.link.online, self.link.epoch)
            if key != written or time.monotonic() - last >= self.settings.status_every:
                try:
                    doc = await self.current_status()
                    await asyncio.to_thread(self._write_status, self.settings.status_path, doc)
                    written, last = key, time.monotonic()
                except OSError as exc:
                    log.warning(
                        "cannot write %s: %s", self.settings.status_path, exc, extra=self._extra
                    )
            await asyncio.sleep(0.5)

    @staticmethod
    def _write_status(path: Path, status: dict[str, Any]) -> None:
        doc = {**status, "written_at": time.time(), "pid": os.getpid()}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, default=str))
        os.replace(tmp, path)

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
                    await asyncio.wait_for(stop.wait(), self.settings.connect_retry)
                    return None

    async def _heartbeat_state(self) -> Heartbeat:
        p = self.pacing
        return heartbeat_from_status(
            self.device_id,
            await self.store.read(Store.status_summary),
            interval=p.heartbeat,
            budget=p.budget,
            bytes_day=self.usage.last_day(),
        )

    async def _outbox_pending(self) -> int | None:
        try:
            return int(await self.store.read(Store.outbox_depth))
        except Exception:
            return None

    async def _last_hub_generation(self) -> int | None:
        try:
            revs = await self.store.read(Store.desired_revisions, 50)
        except Exception:
            return None
        gens = [r.generation for r in revs if r.source == "hub"]
        return max(gens) if gens else None

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
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
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 60.0)
            await stop.wait()
        finally:
            await self.stop()


# ---------------------------------------------------------------- daemon wiring


def agent_rpc_handlers(
    agent: AgentContext, service: Callable[[], SyncService | None]
) -> RpcHandlers:
    """RPC callbacks over the running ``agent.daemon.Agent`` (engine, reconciler, store)."""

    def store() -> Store:
        opened = agent.store
        assert opened is not None  # hooks start after the store is open
        return opened

    async def find(container: str) -> Any:
        engine = agent.engine
        if engine is None:
            raise RpcFailure(UNAVAILABLE, "the container engine is not connected")
        for c in await engine.list_containers():
            # An id prefix must be long enough not to pick a container by accident.
            if container in (c.name, c.service, c.id) or (
                len(container) >= 6 and c.id.startswith(container)
            ):
                return engine, c
        raise RpcFailure(NOT_FOUND, f"no container {container!r} on this device", "args.container")

    async def reconcile() -> dict[str, Any]:
        if agent.reconciler is None:
            raise RpcFailure(UNAVAILABLE, "the reconciler is not running (engine not connected?)")
        agent.reconciler.poke("rpc")
        desired = await store().read(Store.current_desired)
        return {"triggered": True, "generation": None if desired is None else desired.generation}

    restarting: set[str] = set()  # container ids: a second restart would race the first

    async def restart(container: str) -> dict[str, Any]:
        engine, c = await find(container)
        if c.id in restarting:
            raise RpcFailure(
                CONFLICT, f"a restart of {c.name} is already in progress", "args.container"
            )
        restarting.add(c.id)
        try:
            # The stop may take the whole RESTART_STOP_TIMEOUT (a process that ignores
            # SIGTERM); callers wait RESTART_WAIT for the answer (protocol.api).
            await restart_container(engine, c, RESTART_STOP_TIMEOUT)
        except Exception as exc:
            await store().write(
                Store.event,
                "container.restart_failed",
                f"restart of container {c.name} by a remote command failed: {exc}",
                data={"container": c.name, "by": "rpc"},
                severity="error",
            )
            raise
        finally:
            restarting.discard(c.id)
        await store().write(
            Store.event,
            "container.restarted",
            f"container {c.name} restarted by a remote command",
            data={"container": c.name, "by": "rpc"},
        )
        return {"container": c.name, "service": c.service, "restarted": True}

    async def logs(container: str, tail: int) -> list[str]:
        engine, c = await find(container)
        lines: list[str] = []
        async for line in engine.logs(c.id, tail=tail):
            lines.append(line.rstrip("\n"))
            if len(lines) >= tail:
                break
        return lines

    async def status() -> dict[str, Any]:
        out: dict[str, Any] = await store().read(Store.status_summary)
        svc = service()
        out["sync"] = None if svc is None else await svc.current_status()
        return out

    return RpcHandlers(reconcile=reconcile, restart=restart, logs=logs, status=status)


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
            await asyncio.wait_for(stop.wait(), gate.ENROLL_POLL)
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
