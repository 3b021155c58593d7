"""Downlink: the device's desired state from the hub's KV bucket ``desired`` (key = device id).

How it stays correct across link loss, with the least privilege and no per-device consumer on
the hub:

- A plain subscription on ``sb.desired.<id>`` hears each put live: the bucket republishes
  puts there, headers only (``$KV.>`` itself never crosses a leafnode link between JetStream
  domains). It is a prompt only; its ``Nats-Sequence`` lets the agent skip a read when it
  already has that revision.
- On every prompt, at once after the link comes back (puts made while it was down were
  never prompted) and every ``poll_interval`` as a safety net, the agent reads its key with a
  JetStream direct get (``$JS.hub.API.DIRECT.GET.KV_desired.$KV.desired.<id>``), which
  returns the latest value with its revision.
- Who watches the link: with the supervised leaf, its local /leafz (``SyncService``), at no
  upstream cost. Without one (direct or external-leaf mode) this read is also the liveness
  probe: every ``liveness_interval`` online, every ``offline_probe`` offline; a reply means
  online, no responders or a timeout means offline.
- A revision newer than the last one handled is decoded, checked by the desired intake
  (``agent.sync.intake``: bundle signatures and the trust set), stored in SQLite
  (``store.put_desired``) BEFORE anything acts on it, then the reconcile loop is triggered.
  The KV revision is the generation. Offline the agent keeps reconciling from the stored copy.

A KV delete or purge of the key is logged and ignored: the device keeps its last desired
state (decommissioning stops devices explicitly, never by a missing key).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from agent.store import Store
from agent.sync.intake import Intake
from agent.sync.link import LinkState
from protocol.desired import DesiredDecodeError, DesiredState
from protocol.subjects import DESIRED_BUCKET, desired_key, desired_prompt, kv_prefix
from sbutil.tasks import wait_for

log = logging.getLogger(__name__)

Trigger = Callable[[], Any]  # may return an awaitable


# A read older than the prompt that announced it (a replica behind): read again after
# STALE_RETRY s, doubling up to STALE_RETRY_MAX, at most STALE_RETRIES times per announced
# revision (about 100 s in all: a node restarted after a crash catches up on a loaded
# machine in tens of seconds; then the poll is the safety net).
STALE_RETRY = 0.2
STALE_RETRY_MAX = 5.0
STALE_RETRIES = 25


def prompt_revision(msg: Msg) -> int:
    """The revision a desired prompt announces (its ``Nats-Sequence``); 0 when it says none."""
    try:
        return int((msg.headers or {}).get("Nats-Sequence", "0"))
    except ValueError:
        return 0


@dataclasses.dataclass
class Announced:
    """The newest revision a prompt announced, and the reads that came back older since.

    On a hub NATS cluster a direct get may be answered by a replica that has not stored the
    put yet (JetStream's direct get trades that for reads off the leader), so a read older
    than its prompt is retried, a bounded number of times, rather than left to the next
    prompt or poll (the simulator has no poll: such a device never saw its revision and a
    rollout waited on it for ever). The agent and the simulator (bench/sim) share this rule.
    """

    revision: int = 0
    stale_reads: int = 0

    def announce(self, revision: int) -> None:
        if revision > self.revision:
            self.revision, self.stale_reads = revision, 0

    def read_again(self, last: int | None) -> float | None:
        """After a read that left ``last`` as the newest revision held (None or 0: none yet):
        in how many seconds to read again, counting the retry; None when not behind or the
        retries are spent."""
        behind = self.revision > 0 and (not last or last < self.revision)
        if not behind or self.stale_reads >= STALE_RETRIES:
            return None
        delay = min(STALE_RETRY * 2**self.stale_reads, STALE_RETRY_MAX)
        self.stale_reads += 1
        return delay


@dataclasses.dataclass(frozen=True)
class DownlinkSettings:
    # Online, a read even without any prompt: a safety net when the leaf's /leafz watches the
    # link (poll_interval), the liveness probe itself otherwise (liveness_interval).
    poll_interval: float = 900.0  # pacing.DEFAULT's; a metered link's tier may read less often
    liveness_interval: float = 30.0
    # Used instead of poll_interval once a put is seen that no prompt announced.
    fallback_interval: float = 30.0
    offline_probe: float = 1.0  # offline, no leaf monitor: how often to look for the link
    request_timeout: float = 2.0
    tick: float = 0.25  # how often the loop looks at the link state


def kv_bucket(js: JetStreamContext, bucket: str = DESIRED_BUCKET) -> KeyValue:
    """A KeyValue handle built without ``STREAM.INFO`` (which would need more permissions).
    The bucket is created by the hub with ``allow_direct`` on."""
    return KeyValue(name=bucket, stream=f"KV_{bucket}", pre=kv_prefix(bucket), js=js, direct=True)


@dataclasses.dataclass
class DownlinkStats:
    revisions_applied: int = 0
    invalid: int = 0
    probes: int = 0
    probe_failures: int = 0
    missed_prompts: int = 0
    last_revision: int | None = None
    last_applied_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Downlink:
    def __init__(
        self,
        store: Store,
        nc: NATS,
        js: JetStreamContext,
        device_id: str,
        link: LinkState,
        trigger: Trigger,
        *,
        last_revision: int | None = None,
        settings: DownlinkSettings | None = None,
        report_link: bool = True,
        intake: Intake | None = None,
    ) -> None:
        self.intake = intake
        # report_link=False when the leaf's /leafz watches the link: then this read neither
        # flips the link state nor runs while the link is known to be down.
        self.report_link = report_link
        self.store = store
        self.nc = nc
        self.kv = kv_bucket(js)
        self.device_id = device_id
        self.link = link
        self.trigger = trigger
        self.settings = settings or DownlinkSettings()
        self.stats = DownlinkStats(last_revision=last_revision)
        s = self.settings
        self._interval = s.liveness_interval if report_link else s.poll_interval
        self._prompt = asyncio.Event()
        self._announced = Announced()  # a read older than its prompt is read again
        self._subs: list[Subscription] = []
        self._extra = {"device": device_id}

    def set_poll_interval(self, seconds: float) -> None:
        """The safety-net read's interval (a metered link's pacing); a fallback to reading
        more often after a missed prompt is kept."""
        if self.stats.missed_prompts == 0:
            self._interval = seconds

    async def run(self) -> None:
        async def on_put(msg: Msg) -> None:
            seq = prompt_revision(msg)
            last = self.stats.last_revision
            if seq and last is not None and seq <= last:
                return  # already have it (or newer)
            self._announced.announce(seq)
            self._prompt.set()

        # The republish crosses a leaf link; $KV.desired.<id> itself only reaches a device
        # connected straight to the hub (it never crosses a leafnode link), kept as a second
        # prompt so a direct device is prompted even by a hub without the republish.
        self._subs = [
            await self.nc.subscribe(desired_prompt(self.device_id), cb=on_put),
            await self.nc.subscribe(desired_key(self.device_id), cb=on_put),
        ]
        last_probe = -float("inf")
        last_epoch = -1
        reread_at: float | None = None  # a read came back older than its prompt
        try:
            while True:
                # Read the key on a put prompt, at once after the link came back (a new epoch:
                # puts made while offline were never prompted), and every poll_interval as a
                # safety net. Offline, read every offline_probe only when this read is also
                # how the link is watched (no leaf monitor).
                since = time.monotonic() - last_probe
                online = self.link.online
                reread = reread_at is not None and time.monotonic() >= reread_at
                if (
                    self._prompt.is_set()
                    or reread
                    or (online and (self.link.epoch != last_epoch or since >= self._interval))
                    or (not online and self.report_link and since >= self.settings.offline_probe)
                ):
                    prompted = self._prompt.is_set() or reread
                    reread_at = None
                    same_link = online and self.link.epoch == last_epoch
                    self._prompt.clear()
                    last_epoch = self.link.epoch
                    before = self.stats.last_revision
                    try:
                        await self.probe()
                        if not prompted and same_link and self.stats.last_revision != before:
                            self._missed_prompt()
                    except Exception:
                        # e.g. the store refused the write: not marked handled, so the next
                        # read retries it; this task must outlive any single failure.
                        log.exception("desired read failed", extra=self._extra)
                    last_probe = time.monotonic()
                    delay = self._announced.read_again(self.stats.last_revision)
                    if delay is not None:  # not a sleep here: a newer prompt is read at once
                        reread_at = time.monotonic() + delay
                try:
                    await wait_for(self._prompt.wait(), self.settings.tick)
                except TimeoutError:
                    pass
        finally:
            for sub in self._subs:
                try:
                    await sub.unsubscribe()
                except Exception:
                    pass

    def _missed_prompt(self) -> None:
        """A timed read found a put that no prompt announced while the link stayed up: the
        hub is not republishing puts (docs/sync.md). Fall back to reading more often."""
        self.stats.missed_prompts += 1
        if self._interval > self.settings.fallback_interval:
            self._interval = self.settings.fallback_interval
            log.warning(
                "desired puts arrive without a prompt on %s: the hub's bucket has no republish;"
                " reading the key every %.0fs instead",
                desired_prompt(self.device_id),
                self._interval,
                extra=self._extra,
            )

    async def probe(self) -> bool:
        """Read the key once; apply a newer revision. True when the hub answered."""
        self.stats.probes += 1
        try:
            entry = await wait_for(self.kv.get(self.device_id), self.settings.request_timeout)
        except nats.js.errors.KeyNotFoundError as exc:
            # Hub answered: no desired state yet, or the key was deleted (ignored, see above).
            self._contact()
            if getattr(exc, "op", None):
                log.warning(
                    "desired key was deleted on the hub; keeping the stored state",
                    extra=self._extra,
                )
            return True
        except (
            nats.errors.NoRespondersError,
            nats.js.errors.NoStreamResponseError,
            nats.errors.TimeoutError,
            TimeoutError,
            nats.js.errors.ServiceUnavailableError,
        ) as exc:
            self.stats.probe_failures += 1
            self._lost(f"hub unreachable ({type(exc).__name__})")
            return False
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
            self.stats.probe_failures += 1
            self._lost(f"local NATS connection unusable ({type(exc).__name__})")
            return False
        except nats.js.errors.APIError as exc:
            # e.g. the bucket does not exist yet on a fresh hub: reachable, nothing to apply.
            self._contact()
            log.warning("desired read refused: %s", exc, extra=self._extra)
            return True
        self._contact()
        revision = entry.revision or 0
        if self.stats.last_revision is None or revision > self.stats.last_revision:
            await self.apply(revision, entry.value or b"")
        return True

    def _contact(self) -> None:
        if self.report_link:
            self.link.contact()

    def _lost(self, reason: str) -> None:
        if self.report_link:
            self.link.lost(reason)

    async def apply(self, revision: int, value: bytes) -> bool:
        """Validate, store, then trigger. Returns True when a new revision was stored."""
        try:
            doc = DesiredState.from_json(value)
        except DesiredDecodeError as exc:
            self.stats.invalid += 1
            self.stats.last_revision = revision  # never retry the same bad revision
            log.error("invalid desired revision %d: %s", revision, exc, extra=self._extra)
            await self.store.write(
                Store.event,
                "desired.invalid",
                f"desired revision {revision} from the hub is invalid: {exc}",
                severity="error",
                data={"revision": revision, "field": exc.field, "error": exc.message},
            )
            return False
        desired = dataclasses.replace(doc, generation=revision, source="hub")
        if self.intake is not None:
            # The one gate for hub revisions (agent.sync.intake): a refused one is recorded
            # as failed before it is stored, so nothing of it ever runs. On the store's
            # thread, in one transaction: the refusal's rows commit together.
            intake = self.intake
            await self.store.write(lambda _store: intake.check(desired))
        stored = await self.store.write(Store.put_desired, desired)
        self.stats.last_revision = revision
        if stored:
            self.stats.revisions_applied += 1
            self.stats.last_applied_at = time.time()
            log.info("desired generation %d stored", revision, extra=self._extra)
            result = self.trigger()
            if inspect.isawaitable(result):
                await result
        return stored
