"""``SimFleet``: N simulated devices in one asyncio process, through real NATS connections.

fleet = SimFleet(SimOptions(hub_url=..., token=..., count=3))
await fleet.start()                      # enroll, connect, first heartbeat, first reports
await fleet.set_online("sim-0001", False)
await fleet.stop()
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from agent.sync.downlink import prompt_revision
from agent.sync.enroll import enroll, hub_url
from agent.sync.errors import EnrollError
from bench.sim.device import Counters, Link, SimDevice
from bench.sim.model import AGENT_VERSION, DeviceModel
from bench.sim.options import SimError, SimOptions
from protocol import natsauth
from protocol.enroll import DeviceFacts, EnrollReply
from protocol.subjects import DESIRED_PROMPT_WILDCARD, desired_prompt
from sbutil.tasks import wait_for

log = logging.getLogger(__name__)

HEARTBEAT, ROLLUP, ATTACH = 0, 1, 2
TICK_MAX = 0.2
ENROLL_ATTEMPTS = 4


def facts(device_id: str, rng: random.Random) -> DeviceFacts:
    return DeviceFacts(
        hostname=device_id,
        arch=rng.choice(("x86_64", "aarch64", "armv7l")),
        os="Simulated Linux 1.0",
        engine="podman",
        agent_version=AGENT_VERSION,
    )


def shared_login(user: str | None, password: str | None) -> dict[str, Any]:
    """A shared connection's login: a JWT-mode hub's shared logins are bearer JWTs
    (protocol.natsauth), a password-mode hub's a user and password."""
    return natsauth.auth_options("", password or "") or {"user": user or "", "password": password}


class SimFleet:
    def __init__(self, options: SimOptions) -> None:
        self.opts = options
        self.counters = Counters()
        self.devices: dict[str, SimDevice] = {}
        self.credentials: dict[str, EnrollReply] = {}
        self.enroll_seconds: list[float] = []
        self.enroll_retries = 0
        self._own: dict[str, NATS] = {}  # per-device connections
        self._shared: list[Link] = []
        self._ticker: asyncio.Task[None] | None = None
        self._started = False
        self._attached = 0  # devices the ramp has brought online so far

    @property
    def ids(self) -> list[str]:
        return self.opts.ids

    def device(self, device_id: str) -> SimDevice:
        try:
            return self.devices[device_id]
        except KeyError:
            raise SimError(f"no simulated device {device_id!r}", "device_id") from None

    # ------------------------------------------------------------------ start / stop

    async def start(self) -> None:
        if self._started:
            raise SimError("fleet already started")
        self._started = True
        o = self.opts
        if o.enroll:
            await self._enroll_all()
        now = time.time()
        for device_id in self.ids:
            model = DeviceModel(device_id, random.Random(f"{o.seed}:{device_id}"))
            model.started(now)
            if o.backfill_minutes:
                model.backfill(o.backfill_minutes, now)
            self.devices[device_id] = SimDevice(model, o, self.counters)
        try:
            if o.connections:
                for _ in range(o.connections):
                    nc = await self._connect(shared_login(o.shared_user, o.shared_password))
                    self._shared.append(Link.of(nc))
                # One prompt subscription for all: the republish subject names the device.
                await self._shared[0].nc.subscribe(DESIRED_PROMPT_WILDCARD, cb=self._on_prompt)
                if not o.ramp_s:  # with a ramp the ticker attaches them (ATTACH events)
                    for i, dev in enumerate(self.devices.values()):
                        dev.attach(self._shared[i % len(self._shared)])
            else:
                await asyncio.gather(*(self._link_up(d) for d in self.ids))
        except BaseException:
            await self.stop()
            raise
        if not o.ramp_s:
            self._attached = len(self.devices)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        await asyncio.gather(*(d.close() for d in self.devices.values()))
        conns = list(self._own.values()) + [link.nc for link in self._shared]
        self._own.clear()
        self._shared.clear()
        await asyncio.gather(*(self._close(nc) for nc in conns))

    async def set_online(self, device_id: str, online: bool) -> None:
        """Cut (False) or restore (True) a device's link. Cut: no heartbeats, reports or
        desired reads, and with per-device connections its connection is closed (RPCs get
        no responders); rows keep accumulating. Restored: heartbeat at once, desired read,
        the backlog drains as chained batches (applied exactly once by the hub)."""
        dev = self.device(device_id)
        if online == dev.online:
            return
        if not online:
            dev.detach()
            nc = self._own.pop(device_id, None)
            if nc is not None:
                await self._close(nc)
            return
        if self._shared:
            dev.attach(self._shared[self.ids.index(device_id) % len(self._shared)])
        else:
            await self._link_up(device_id)

    # ------------------------------------------------------------------ figures

    @property
    def ramped(self) -> bool:
        """Every device has been brought online once (at once without a ramp)."""
        return self._attached >= len(self.devices)

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {
            "devices": len(self.devices),
            "online": sum(1 for d in self.devices.values() if d.online),
            "ramped": self.ramped,
            "backlog_rows": sum(len(d.model.outbox) for d in self.devices.values()),
            "heartbeats": c.heartbeats,
            "batches": c.batches,
            "rows": c.rows,
            "duplicates": c.duplicates,
            "publish_failures": c.publish_failures,
            "probes": c.probes,
            "probe_failures": c.probe_failures,
            "revisions": c.revisions,
            "applies": c.applies,
        }

    def backlog(self, device_id: str) -> int:
        return len(self.device(device_id).model.outbox)

    # ------------------------------------------------------------------ internals

    async def _enroll_all(self) -> None:
        o = self.opts
        url = hub_url(o.hub_url, o.enroll_user, o.enroll_password)
        sem = asyncio.Semaphore(o.enroll_concurrency)
        rng = random.Random(o.seed)

        async def one(device_id: str) -> None:
            async with sem:
                t0 = time.perf_counter()
                for attempt in range(ENROLL_ATTEMPTS):
                    try:
                        reply = await enroll(url, o.token, device_id, facts(device_id, rng),
                                             o.tags, timeout=60)  # fmt: skip
                        break
                    except EnrollError as exc:
                        # Seen: the bootstrap login refused ("Authorization Violation") while
                        # the hub reloads its nats-server config for another enrollment. A
                        # device's enroll command is retried by its operator; here, by us.
                        if exc.code != "unavailable" or attempt == ENROLL_ATTEMPTS - 1:
                            raise SimError(
                                f"enrollment of {device_id} failed: {exc}", "token"
                            ) from None
                        self.enroll_retries += 1
                        await asyncio.sleep(0.5 * (attempt + 1))
                self.enroll_seconds.append(time.perf_counter() - t0)
                self.credentials[device_id] = reply

        await asyncio.gather(*(one(d) for d in self.ids))

    async def _connect(
        self,
        login: dict[str, Any],
        device_id: str | None = None,
        more: Sequence[str] = (),
        reconnected: Callable[[], Awaitable[None]] | None = None,
    ) -> NATS:
        """``more``: a hub cluster's other nodes (the enrollment reply's ``hub_urls``), so a
        device fails over as a direct-mode agent does."""
        kw: dict[str, Any] = {}
        if reconnected is not None:
            kw["reconnected_cb"] = reconnected
        if device_id is not None:
            # The agent's inbox prefix: a device may receive only its own replies.
            kw["inbox_prefix"] = f"_INBOX.{device_id}"
        try:
            servers = [self.opts.server_url, *more]
            return await nats.connect(
                servers if more else self.opts.server_url,
                **login,
                name=device_id or "sb-sim",
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                pending_size=64 * 1024 * 1024,
                **kw,
            )
        except Exception as exc:
            raise SimError(
                f"cannot connect to {self.opts.server_url}: {exc!r}", "hub_url"
            ) from None

    async def _link_up(self, device_id: str) -> None:
        creds = self.credentials[device_id]
        dev = self.devices[device_id]

        async def relinked() -> None:
            # As the agent on a new link: puts made while it was down were never prompted
            # (another node of a hub cluster, or the same hub back).
            dev.prompt()
            dev.kick()

        # The device's own login, as the agent's: in JWT mode its JWT and the nkey it made
        # at enrollment (the seed never left it), else its user and password.
        nc = await self._connect(
            natsauth.enrolled_login(creds), device_id, creds.hub_urls, relinked
        )
        self._own[device_id] = nc
        await nc.subscribe(desired_prompt(device_id), cb=self._prompt_cb(dev))
        dev.attach(Link.of(nc))

    @staticmethod
    def _prompt_cb(dev: SimDevice) -> Any:
        async def cb(msg: Msg) -> None:
            dev.prompt(prompt_revision(msg))

        return cb

    async def _on_prompt(self, msg: Msg) -> None:
        dev = self.devices.get(msg.subject.rsplit(".", 1)[-1])
        if dev is not None:
            dev.prompt(prompt_revision(msg))

    @staticmethod
    async def _close(nc: NATS) -> None:
        try:
            await wait_for(nc.close(), 5)
        except Exception as exc:  # closing is best effort at shutdown
            log.debug("close failed: %r", exc)

    async def _tick(self) -> None:
        """One heap of due times for every device's heartbeat and rollup (and, with a ramp,
        its coming online)."""
        o = self.opts
        rng = random.Random(o.seed)
        now = time.monotonic()
        heap: list[tuple[float, int, int]] = []
        devs = list(self.devices.values())
        for i in range(len(devs)):
            if o.ramp_s:
                # Evenly spaced: the hub sees a steady len(devs)/ramp_s arrivals per second.
                heap.append((now + o.ramp_s * i / len(devs), i, ATTACH))
                continue
            spread_h = rng.random() if o.jitter else 1.0
            spread_r = rng.random() if o.jitter else 1.0
            heap.append((now + o.heartbeat_s * spread_h, i, HEARTBEAT))
            heap.append((now + o.rollup_s * spread_r, i, ROLLUP))
        heapq.heapify(heap)
        while True:
            now = time.monotonic()
            n = 0
            while heap and heap[0][0] <= now:
                when, i, kind = heapq.heappop(heap)
                if kind == ATTACH:
                    # attach() beats at once, so the next beat is one interval later; the
                    # rollup phase stays random as the devices' clocks are unrelated.
                    devs[i].attach(self._shared[i % len(self._shared)])
                    self._attached += 1
                    heapq.heappush(heap, (when + o.heartbeat_s, i, HEARTBEAT))
                    spread_r = rng.random() if o.jitter else 1.0
                    heapq.heappush(heap, (when + o.rollup_s * spread_r, i, ROLLUP))
                else:
                    step = o.heartbeat_s if kind == HEARTBEAT else o.rollup_s
                    nxt = when + step
                    if nxt < now:  # a stalled loop skips, never bursts
                        nxt = now + step
                    heapq.heappush(heap, (nxt, i, kind))
                    if kind == HEARTBEAT:
                        await devs[i].send_heartbeat()
                    else:
                        devs[i].rollup_due()
                n += 1
                if n % 500 == 0:
                    await asyncio.sleep(0)  # let acks and prompts in during a big burst
            delay = min(TICK_MAX, heap[0][0] - time.monotonic()) if heap else TICK_MAX
            await asyncio.sleep(max(0.0, delay))
