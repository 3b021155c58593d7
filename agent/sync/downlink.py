"""Downlink: the device's desired state from the hub's KV bucket ``desired`` (key = device id).

How it stays correct across link loss, with the least privilege and no per-device consumer on
the hub:

- A plain subscription on ``$KV.desired.<id>`` (the subject a KV put publishes on) hears each
  put live, as a prompt only; its content is not trusted for the revision.
- Every prompt, every online transition and every ``poll_interval`` the agent reads its key with
  a JetStream direct get (``$JS.hub.API.DIRECT.GET.KV_desired.$KV.desired.<id>``), which
  returns the latest value with its revision. That read doubles as the hub-link probe: a reply
  means online, no responders or a timeout means offline (then it retries every
  ``offline_probe`` seconds, which is also how a restored link is noticed).
- A revision newer than the last one handled is decoded, stored in SQLite
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
from typing import Any, Protocol

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from agent.sync.link import LinkState
from protocol.desired import DesiredDecodeError, DesiredState
from protocol.subjects import DESIRED_BUCKET

log = logging.getLogger(__name__)

Trigger = Callable[[], Any]  # may return an awaitable


class DesiredStore(Protocol):
    def put_desired(self, desired: DesiredState) -> bool: ...

    def event(
        self,
        kind: str,
        message: str,
        *,
        severity: Any = "info",
        data: dict[str, Any] | None = None,
    ) -> int: ...


@dataclasses.dataclass(frozen=True)
class DownlinkSettings:
    poll_interval: float = 30.0  # online: a safety-net read even without any prompt
    offline_probe: float = 1.0  # offline: how often to check whether the link is back
    request_timeout: float = 2.0


def kv_bucket(js: JetStreamContext, bucket: str = DESIRED_BUCKET) -> KeyValue:
    """A KeyValue handle built without ``STREAM.INFO`` (which would need more permissions).
    The bucket is created by the hub with ``allow_direct`` on."""
    return KeyValue(name=bucket, stream=f"KV_{bucket}", pre=f"$KV.{bucket}.", js=js, direct=True)


@dataclasses.dataclass
class DownlinkStats:
    revisions_applied: int = 0
    invalid: int = 0
    probes: int = 0
    probe_failures: int = 0
    last_revision: int | None = None
    last_applied_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Downlink:
    def __init__(
        self,
        store: DesiredStore,
        nc: NATS,
        js: JetStreamContext,
        device_id: str,
        link: LinkState,
        trigger: Trigger,
        *,
        last_revision: int | None = None,
        settings: DownlinkSettings | None = None,
    ) -> None:
        self.store = store
        self.nc = nc
        self.kv = kv_bucket(js)
        self.device_id = device_id
        self.link = link
        self.trigger = trigger
        self.settings = settings or DownlinkSettings()
        self.stats = DownlinkStats(last_revision=last_revision)
        self._prompt = asyncio.Event()
        self._sub: Subscription | None = None
        self._extra = {"device": device_id}

    async def run(self) -> None:
        async def on_put(_msg: Msg) -> None:
            self._prompt.set()

        self._sub = await self.nc.subscribe(f"$KV.{DESIRED_BUCKET}.{self.device_id}", cb=on_put)
        last_probe = -float("inf")
        try:
            while True:
                # Probe on a put prompt, at once when another task saw the link drop (a
                # failed publish), every offline_probe while offline, else every poll_interval.
                due = time.monotonic() - last_probe >= self.settings.poll_interval
                if self._prompt.is_set() or not self.link.online or due:
                    self._prompt.clear()
                    await self.probe()
                    last_probe = time.monotonic()
                try:
                    await asyncio.wait_for(self._prompt.wait(), self.settings.offline_probe)
                except TimeoutError:
                    pass
        finally:
            if self._sub is not None:
                try:
                    await self._sub.unsubscribe()
                except Exception:
                    pass

    async def probe(self) -> bool:
        """Read the key once; apply a newer revision. True when the hub answered."""
        self.stats.probes += 1
        try:
            entry = await asyncio.wait_for(
                self.kv.get(self.device_id), self.settings.request_timeout
            )
        except nats.js.errors.KeyNotFoundError as exc:
            # Hub answered: no desired state yet, or the key was deleted (ignored, see above).
            self.link.contact()
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
            self.link.lost(f"hub unreachable ({type(exc).__name__})")
            return False
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
            self.stats.probe_failures += 1
            self.link.lost(f"local NATS connection unusable ({type(exc).__name__})")
            return False
        except nats.js.errors.APIError as exc:
            # e.g. the bucket does not exist yet on a fresh hub: reachable, nothing to apply.
            self.link.contact()
            log.warning("desired read refused: %s", exc, extra=self._extra)
            return True
        self.link.contact()
        revision = entry.revision or 0
        if self.stats.last_revision is None or revision > self.stats.last_revision:
            await self.apply(revision, entry.value or b"")
        return True

    async def apply(self, revision: int, value: bytes) -> bool:
        """Validate, store, then trigger. Returns True when a new revision was stored."""
        try:
            doc = DesiredState.from_json(value)
        except DesiredDecodeError as exc:
            self.stats.invalid += 1
            self.stats.last_revision = revision  # never retry the same bad revision
            log.error("invalid desired revision %d: %s", revision, exc, extra=self._extra)
            await asyncio.to_thread(
                self.store.event,
                "desired.invalid",
                f"desired revision {revision} from the hub is invalid: {exc}",
                severity="error",
                data={"revision": revision, "field": exc.field, "error": exc.message},
            )
            return False
        desired = dataclasses.replace(doc, generation=revision, source="hub")
        stored = await asyncio.to_thread(self.store.put_desired, desired)
        self.stats.last_revision = revision
        if stored:
            self.stats.revisions_applied += 1
            self.stats.last_applied_at = time.time()
            log.info("desired generation %d stored", revision, extra=self._extra)
            result = self.trigger()
            if inspect.isawaitable(result):
                await result
        return stored
