"""Enrollment on ``sb.hub.enroll``: a registration token traded for the device's own NATS user.

The request comes from the bootstrap user ``enroll`` (it may publish only this subject).
In one store transaction: refuse a device id that is already enrolled (unless decommissioned,
or an operator approved a re-enrollment with ``devices.approve_reenroll``), use the token
once (tenant, expiry, max uses: a refusal stores nothing, not even the use), create or
refresh the device with its facts and tags, reset its sync position (a re-enrolled device
starts a fresh outbox at seq 1) and store the bcrypt hash of the NATS password the device
made and sent in its request. Then the nats-server config is regenerated with the device's
user and reloaded (other connections stay up), the device's desired document is written (so
its first read finds one), and the reply carries the user name, the leaf URL and the
JetStream domain, never a password: every enrolling device shares the bootstrap login and
so can read every enrollment reply (docs/sync.md "Enrollment").

Requests are handled concurrently (at most ``MAX_IN_FLIGHT``) and their reloads coalesced
(``Coalescer``): the enrollments committed while a reload runs share the next one (and one
desired publish after it), not one each, and each reply still goes out only after a reload
that started after its device was committed (so includes its user) was confirmed loaded.

Every reload also drops any connection that has not finished logging in
(nats-server re-checks each client and one without its CONNECT yet fails:
"Authorization Violation"), e.g. the next device's bootstrap login: fewer reloads make that
rarer, and the agent retries such a refusal (``agent.sync.enroll``). A reply lost after the
request went out is asked for again with the same body; the device's password or key proves
the repeat and it is answered as the first time (``_repeats_enrollment``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hub.api.validate import NAME_RE, NAME_RULE
from hub.errors import Conflict, HubError, Invalid
from hub.metrics import HubMetrics
from hub.natsconf import RESERVED_USERS, check_password, hash_password
from hub.store import Store
from hub.sync.deviceauth import DeviceAuth
from protocol.enroll import EnrollReply, EnrollRequest, decode_enroll_request
from protocol.errors import MessageError
from protocol.rpc import rpc_error
from protocol.subjects import ENROLL, JS_DOMAIN, valid_device_id
from sbutil.tasks import cancel_and_wait

log = logging.getLogger(__name__)

QUEUE = "hub-enroll"
T = TypeVar("T")
MAX_IN_FLIGHT = 64  # enrollments handled at once; more wait in the subscription
# Reloads back to back would leave no moment for a login to finish (each reload drops the
# connections still logging in): at most one reload per RELOAD_GAP, sharing the wait.
RELOAD_GAP = 0.1
StoreCall = Callable[..., Awaitable[Any]]


class Coalescer(Generic[T]):
    """Runs ``fn(items)`` for callers of ``request(item)``, one run at a time: a request
    waits for a run that *starts* after it (so the run sees everything the caller committed
    before asking), and every request made while a run is in progress shares the next one,
    which gets all their items."""

    def __init__(self, fn: Callable[[list[T]], Awaitable[None]], *, gap: float = 0.0) -> None:
        self._fn = fn
        self._gap = gap  # at least this long from one run's start to the next one's
        self._next: tuple[asyncio.Future[None], list[T]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.runs = 0

    async def request(self, item: T) -> None:
        if self._next is None:
            self._next = (asyncio.get_running_loop().create_future(), [])
        fut, items = self._next
        items.append(item)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="hub-enroll-reload")
        # shield: one caller giving up must not cancel the run the others wait for.
        await asyncio.shield(fut)

    async def _drain(self) -> None:
        while self._next is not None:
            (fut, items), self._next = self._next, None
            self.runs += 1
            started = time.monotonic()
            try:
                await self._fn(items)
            except asyncio.CancelledError:
                fut.cancel()
                if self._next is not None:
                    self._next[0].cancel()
                raise
            except Exception as exc:
                fut.set_exception(exc)
                fut.exception()  # marked retrieved: every waiter may have given up
            else:
                fut.set_result(None)
            if self._next is not None:
                await asyncio.sleep(self._gap - (time.monotonic() - started))


def normalise_tags(tags: tuple[str, ...]) -> list[str]:
    """The agent allows A-Z and ':' in tags; the hub's names are lower case without ':'.
    Lower-case what can be; refuse the rest, naming the tag."""
    out = []
    for i, tag in enumerate(tags):
        low = tag.lower()
        if not NAME_RE.fullmatch(low):
            raise Invalid(f"tag {tag!r} {NAME_RULE}", field=f"tags[{i}]")
        out.append(low)
    return sorted(set(out))


def enroll_in_store(
    store: Store, req: EnrollRequest, password_hash: str, public_key: str = ""
) -> dict[str, Any]:
    """The whole enrollment as one transaction; raises ``HubError`` with nothing stored.
    ``password_hash``: the bcrypt hash of the device's NATS password (only that is stored);
    ``public_key`` instead in JWT mode: the device's own nkey (a key it replaces is revoked)."""
    device_id = req.device_id
    if not valid_device_id(device_id):  # the decoder checked; the NATS config depends on it
        raise Invalid(f"device id {device_id!r} is not valid", field="device_id")
    if device_id in RESERVED_USERS:
        raise Invalid(f"device id {device_id!r} is reserved", field="device_id")
    tags = normalise_tags(req.tags)
    with store.tx():
        state = store.device_enroll_state(device_id)
        again = state is not None
        if state is not None and not state["decommissioned"] and not state["reenroll_approved"]:
            if _repeats_enrollment(store, req, public_key):
                # The same device asking again with the credential it made for this
                # enrollment: its reply was lost (e.g. the requester's connection dropped
                # by a config reload while the reply was in flight). Answered as the first
                # time, with nothing stored and the token not used again.
                dev = store.get_device(device_id)
                return {
                    "tenant": dev["tenant"],
                    "again": False,
                    "tags": dev["tags"],
                    "repeat": True,
                }
            raise Conflict(
                f"device {device_id!r} is already enrolled; an operator must approve a"
                f" re-enrollment (signalbeam device approve-reenroll {device_id}) or"
                " decommission it first",
                field="device_id",
            )
        tenant = store.consume_enrollment_token(req.token)
        f = req.facts
        store.upsert_device(
            device_id,
            tenant,
            hostname=f.hostname,
            arch=f.arch,
            os=f.os,
            engine=f.engine,
            agent_version=f.agent_version,
            tags=tags,
        )
        store.set_device_status(device_id, "offline")
        store.reset_device_sync(device_id)
        if public_key:
            store.set_device_key(device_id, public_key, int(time.time()))
        else:
            # A key from an earlier enrollment is not this one's: revoked, forgotten.
            store.revoke_device(device_id, int(time.time()))
            store.set_device_credentials(device_id, device_id, password_hash)
        # The key its secrets are sealed to; a re-enrollment from an agent without one
        # clears the old key, so nothing is sealed to a key the device may no longer hold.
        store.set_seal_key(device_id, req.seal_key or None)
        store.add_event(
            device_id,
            "enrolled",
            f"{'re-enrolled' if again else 'enrolled'} into tenant {tenant}",
            {"tenant": tenant, "facts": f.to_dict(), "tags": tags, "again": again},
        )
    return {"tenant": tenant, "again": again, "tags": tags}


def _repeats_enrollment(store: Store, req: EnrollRequest, public_key: str) -> bool:
    """Whether the request proves it comes from the device of the enrollment in force: the
    key it enrolled (JWT mode), or the password it made (password mode; only its bcrypt hash
    is stored). Only the device holds that secret (the key's proof comes with its first
    login: a JWT for a public key is useless without the seed)."""
    if public_key:
        return store.device_key(req.device_id) == public_key
    stored = store.device_password_hash(req.device_id)
    if not stored or not req.nats_password:
        return False
    return check_password(req.nats_password, stored)


class Enrollment:
    def __init__(
        self,
        nc: NATS,
        store: Store,
        call: StoreCall,
        metrics: HubMetrics,
        *,
        leaf_url: str,
        hub_url: str,
        leaf_urls: Sequence[str] = (),
        hub_urls: Sequence[str] = (),
        reload_users: Callable[[], Awaitable[None]],
        after_enroll: Callable[[list[tuple[str, dict[str, Any]]]], Awaitable[None]],
        auth: DeviceAuth | None = None,
    ) -> None:
        self.nc = nc
        self.store = store
        self.call = call
        self.metrics = metrics
        self.leaf_url = leaf_url
        self.hub_url = hub_url
        # A cluster's every node (single server: empty, the reply as before clusters).
        self.leaf_urls, self.hub_urls = tuple(leaf_urls), tuple(hub_urls)
        self.reload_users = reload_users
        self.after_enroll = after_enroll
        self.auth = auth
        self._sub: Subscription | None = None
        self.reloads: Coalescer[tuple[str, dict[str, Any]]] = Coalescer(
            self._reload, gap=RELOAD_GAP
        )
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(ENROLL, queue=QUEUE, cb=self._on_msg)

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:
                pass
        await cancel_and_wait(list(self._tasks))

    async def _reload(self, enrolled: list[tuple[str, dict[str, Any]]]) -> None:
        """One config rewrite + reload for every device committed before it started, then
        their post-enrollment step (desired documents, notices) in one go: all before any
        of their replies."""
        if self.auth is None:
            await self.reload_users()
            self.metrics.enroll_reloads.inc()
        # A repeated request (a lost reply) was announced the first time.
        enrolled = [e for e in enrolled if not e[1].get("repeat")]
        try:
            await self.after_enroll(enrolled)
        except Exception:
            log.warning(
                "post-enrollment step failed for %s",
                ",".join(d for d, _ in enrolled)[:300],
                exc_info=True,
            )

    async def _on_msg(self, msg: Msg) -> None:
        if not msg.reply:
            self.metrics.sync_bad.labels("enroll", "no_reply").inc()
            log.warning("enrollment published without a reply subject; ignored")
            return
        # The subscription delivers one message at a time to this callback: hand each to its
        # own task so a burst shares reloads; a full set of slots holds the next one here.
        await self._slots.acquire()
        task = asyncio.create_task(self._serve(msg), name="hub-enroll")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        try:
            body = await self._enroll(msg.data)
            try:
                await msg.respond(body)
            except Exception as exc:
                log.warning("could not send the enrollment reply: %s", exc)
        finally:
            self._slots.release()

    async def _enroll(self, data: bytes) -> bytes:
        try:
            req = decode_enroll_request(data)
        except MessageError as exc:
            self.metrics.sync_bad.labels("enroll", exc.code).inc()
            return self._refuse(None, exc.code, f"{exc.field}: {exc.message}", exc.field)
        if self.auth is not None:
            return await self._enroll_jwt(req)
        if not req.nats_password:
            # An agent from before issue 19 expects its password in the reply, where every
            # other enrolling device could read it.
            self.metrics.sync_bad.labels("enroll", "invalid").inc()
            return self._refuse(
                req.device_id,
                "invalid",
                "the request carries no nats_password: this agent is older than the hub;"
                " upgrade it (the device now makes its own NATS password)",
                "nats_password",
            )
        password_hash = hash_password(req.nats_password)
        try:
            info = await self.call(enroll_in_store, self.store, req, password_hash)
        except HubError as exc:
            return self._refuse(req.device_id, exc.code, exc.message, exc.field)
        try:
            await self.reloads.request((req.device_id, info))
        except Exception:
            # Committed, but its user may not be loaded: the device must not be told to log
            # in. The next successful reload (any enrollment, a decommission) loads it.
            log.exception("nats-server config reload failed", extra={"device": req.device_id})
            return self._refuse(
                req.device_id, "unavailable", "the hub could not load the device's user", None
            )
        self.metrics.enrollments.labels("ok").inc()
        log.info(
            "enrolled (tenant %s, tags %s)",
            info["tenant"],
            ",".join(info["tags"]) or "-",
            extra={"device": req.device_id},
        )
        # No password in the reply (see the module docstring).
        return EnrollReply(
            req.device_id, req.device_id, "", self.leaf_url, self.hub_url, JS_DOMAIN,
            trust=self.store.trust_cache,  # the fleet's bundle-signing keys (docs/security.md)
            leaf_urls=self.leaf_urls,
            hub_urls=self.hub_urls,
        ).to_json()  # fmt: skip

    async def _enroll_jwt(self, req: EnrollRequest) -> bytes:
        """JWT mode: the device's key is stored and a JWT signed for it; nothing in the
        nats-server config changes (docs/security.md "Device identity")."""
        assert self.auth is not None
        if not req.nats_public_key:
            self.metrics.sync_bad.labels("enroll", "invalid").inc()
            return self._refuse(
                req.device_id,
                "invalid",
                "the request carries no nats_public_key: this hub logs devices in with their"
                " own nkey and a JWT; upgrade the agent",
                "nats_public_key",
            )
        try:
            info = await self.call(enroll_in_store, self.store, req, "", req.nats_public_key)
        except HubError as exc:
            return self._refuse(req.device_id, exc.code, exc.message, exc.field)
        token = self.auth.issue(req.device_id, req.nats_public_key)
        # The desired document and the change notices, shared by the enrollments of a burst
        # (no reload: the coalescer only batches the publish).
        try:
            await self.reloads.request((req.device_id, info))
        except Exception:
            log.exception("post-enrollment step failed", extra={"device": req.device_id})
        self.metrics.enrollments.labels("ok").inc()
        self.metrics.device_jwt.labels("issued").inc()
        log.info(
            "enrolled with its own key (tenant %s, tags %s)",
            info["tenant"],
            ",".join(info["tags"]) or "-",
            extra={"device": req.device_id},
        )
        # The JWT is no secret without the device's seed, which never left the device.
        return EnrollReply(
            req.device_id,
            req.device_id,
            "",
            self.leaf_url,
            self.hub_url,
            JS_DOMAIN,
            nats_jwt=token,
            trust=self.store.trust_cache,  # the fleet's bundle-signing keys (docs/security.md)
            leaf_urls=self.leaf_urls,
            hub_urls=self.hub_urls,
        ).to_json()

    def _refuse(self, device_id: str | None, code: str, message: str, field: str | None) -> bytes:
        # Counted and logged, never stored: a refused enrollment leaves no trace in the DB.
        self.metrics.enrollments.labels(code).inc()
        log.warning("enrollment refused: %s", message[:300], extra={"device": device_id})
        return rpc_error(code, message, field)
