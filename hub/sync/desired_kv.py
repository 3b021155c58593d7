"""The desired-state writer: each device's full ``DesiredState`` document in the KV bucket
``desired`` (key = device id), written only when it changes.

The document is computed from the store (the assignment resolution rule, the bundle version's
spec and content hash, and the rollout that targets the device with that version, if any).
"Changed" is judged on the document without its generation: the KV revision *is* the
generation (the agent overwrites the field with the entry's revision), so the hub writes 0
there and records the revision ``kv.put`` returned.

Callers: the operator API (every committed change that alters a device's resolution), the
rollouts engine (``await hub.sync.desired.publish(ids)``), and the hub's start (every device
once; documents the DB records as written are not put again unless the bucket is new or
cannot be the one they were written to, ``bucket_holds_records``). Publishes are serialised
by one lock, so two callers never race on the same key; within one, a chunk of puts to
different keys is in flight at once.

A document left as it was is never put again, so a put's prompt (the bucket's republish on
``sb.desired.<id>``) is sent once; the rollouts engine's periodic re-publish of the devices
it still waits on asks for that prompt again (``publish(prompt=True)``), sent here with the
recorded generation and no KV write.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from bundles.variables import References, references
from hub.desired import Membership
from hub.gates import forced
from hub.store import Store
from hub.variables import Resolved, Setting, resolve
from protocol.desired import DesiredState
from protocol.subjects import desired_key, desired_prompt
from sbutil.seal import seal

log = logging.getLogger(__name__)
T = TypeVar("T")
PUT_CHUNK = 256  # KV puts in flight at once
LOG_EACH = 20  # a publish of more devices logs one summary line (each device at DEBUG)
StoreCall = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Desired:
    """What one device should run, before it gets a generation."""

    device_id: str
    doc: bytes  # DesiredState.to_json() with generation 0 (secrets not sealed yet)
    doc_hash: str
    bundle_ref: str | None
    rollout_id: str | None
    # Makes the document with the device's secrets sealed in. Called (on the store thread)
    # only for a document that is to be written: sealing decrypts each value and does an
    # X25519 exchange, ~1 ms a device, which a start-up publish of every device must not pay
    # for the documents that did not change.
    seal: Callable[[], bytes] | None = field(default=None, compare=False, repr=False)

    def final(self) -> Desired:
        return self if self.seal is None else replace(self, doc=self.seal(), seal=None)


Resolver = Callable[[Store, list[str] | None], dict[str, Desired]]


def desired_document(
    device_id: str,
    spec: dict[str, Any] | None,
    content_hash: str | None,
    bundle_ref: str | None,
    rollout_id: str | None,
    windows: tuple[str, ...] | None = None,
    force: bool = False,
    signatures: tuple[dict[str, Any], ...] = (),
    trust: tuple[dict[str, Any], ...] = (),
    variables: dict[str, str] | None = None,
    fingerprints: dict[str, str] | None = None,
    sealed: Callable[[], str] | None = None,
    sealed_to: str = "",
    metered: int | None = None,
) -> Desired:
    state = DesiredState(
        0, spec, "hub", rollout_id, content_hash, windows, force, signatures, trust,
        variables or None, {"fingerprints": fingerprints} if fingerprints else None,
        metered,
    )  # fmt: skip
    # "Changed" is judged without the sealed secrets: a seal is made with a fresh ephemeral
    # key each time, so only a new fingerprint (a rotated value) or a new device key (a
    # re-enrollment) changes the document.
    doc = state.to_json()
    doc_hash = hashlib.sha256(doc + sealed_to.encode()).hexdigest()
    seal_in: Callable[[], bytes] | None = None
    if fingerprints and sealed is not None:
        fps, seal_now = fingerprints, sealed

        def seal_in() -> bytes:
            return replace(state, secrets={"fingerprints": fps, "sealed": seal_now()}).to_json()

    return Desired(device_id, doc, doc_hash, bundle_ref, rollout_id, seal_in)


def _plain(store: Store, r: Resolved, cache: dict[tuple[str, str, str], str]) -> str:
    """A secret's value, decrypted once per resolve however many devices it reaches."""
    s = r.setting
    key = (s.scope, s.target, s.name)
    if key not in cache:
        cache[key] = store.secret_value(r)
    return cache[key]


def _values(
    store: Store,
    refs: References,
    member: Membership | None,
    settings: list[Setting],
    seal_key: str | None,
    cache: dict[tuple[str, str, str], str],
) -> tuple[dict[str, str] | None, dict[str, str] | None, Callable[[], str] | None]:
    """The variables and secret fingerprints the spec refers to (``refs``) that reach this
    device (a reference without one is left out: the agent refuses the revision naming it),
    and how to seal the secrets' values to the device's key."""
    if not refs or member is None:
        return None, None, None
    found_vars = resolve(member, settings, "var") if refs.variables else {}
    found_secrets = resolve(member, settings, "secret") if refs.secrets else {}
    variables = {n: found_vars[n].value for n in sorted(refs.variables) if n in found_vars}
    chosen = {n: found_secrets[n] for n in sorted(refs.secrets) if n in found_secrets}
    fps = {n: r.value for n, r in chosen.items()}
    if not chosen or seal_key is None:
        return variables, fps, None

    def sealed() -> str:
        plain = {n: _plain(store, r, cache) for n, r in chosen.items()}
        return seal(seal_key, json.dumps(plain, sort_keys=True).encode())

    return variables, fps, sealed


def resolve_documents(store: Store, device_ids: list[str] | None) -> dict[str, Desired]:
    """The default resolver (runs on the writer thread): assignments decide the bundle
    version (``hub.desired``); a decommissioned device, or one with nothing assigned, gets
    ``spec: null`` ("run no bundle"), written explicitly so the device stops what it runs."""
    out: dict[str, Desired] = {}
    specs: dict[tuple[str, str], tuple[dict[str, Any], str] | None] = {}
    resolved = store.resolve_desired(device_ids)
    # Update gates (hub.gates): the windows set for the device or its groups, and an
    # operator's override while the device still resolves to the version it was given for.
    members = store.memberships(list(resolved))
    windows = store.windows_of(members)
    # Per-device variables and secrets (hub.variables), resolved only for devices whose
    # bundle refers to some: most fleets set none, and then this reads one empty table.
    settings = store.variable_settings()
    by_id = {m.device_id: m for m in members}
    refs: dict[tuple[str, str], References] = {}
    keys = store.seal_keys([d for d, a in resolved.items() if a is not None])
    plain: dict[tuple[str, str, str], str] = {}  # decrypted secrets, this resolve only
    # Metered links (hub.metered): the data budget set for the device or its groups.
    budgets = store.budgets_of(members)
    overrides = store.overrides(list(resolved))
    sigs: dict[tuple[str, str], tuple[dict[str, Any], ...]] = {}
    # Every document carries the whole signed trust chain (a few hundred bytes per set), so a
    # device that missed a rotation step while offline still walks it in order.
    trust = tuple(store.trust_chain())
    for device_id, a in resolved.items():
        if a is None:
            out[device_id] = desired_document(
                device_id, None, None, None, None, trust=trust, metered=budgets.get(device_id)
            )
            continue
        key = (a.bundle, a.version)
        if key not in specs:
            specs[key] = store.bundle_spec(a.bundle, a.version)
            sigs[key] = tuple(store.bundle_signatures(a.bundle, a.version))
            found_spec = specs[key]
            refs[key] = references(found_spec[0] if found_spec else None)
        found = specs[key]
        if found is None:  # versions are immutable and never deleted; defensive only
            log.error("assigned %s is missing from the catalog", a.ref, extra={"device": device_id})
            continue
        spec, digest = found
        rollout_id = store.rollout_for(device_id, a.bundle, a.version)
        variables, fps, sealed = _values(
            store, refs[key], by_id.get(device_id), settings, keys.get(device_id), plain
        )
        out[device_id] = desired_document(
            device_id,
            spec,
            digest,
            a.ref,
            rollout_id,
            windows.get(device_id),
            forced(overrides.get(device_id), a.ref),
            sigs[key],
            trust,
            variables,
            fps,
            sealed,
            keys.get(device_id, "") if sealed is not None else "",
            budgets.get(device_id),
        )
    return out


def _plan(
    store: Store, resolver: Resolver, device_ids: list[str] | None, force: bool
) -> tuple[list[Desired], dict[str, int]]:
    """The documents to put, and the recorded generation of each one left as it was."""
    wanted = resolver(store, device_ids)
    published = store.desired_published(None if device_ids is None else list(wanted))
    todo, same = [], {}
    for d in wanted.values():
        last = published.get(d.device_id, {})
        if force or last.get("doc_hash") != d.doc_hash:
            todo.append(d.final())
        elif last.get("generation"):
            same[d.device_id] = int(last["generation"])
    return todo, same


class DesiredWriter:
    def __init__(
        self,
        kv: KeyValue,
        store: Store,
        call: StoreCall,
        *,
        resolver: Resolver = resolve_documents,
        on_written: Callable[[dict[str, int]], Awaitable[None]] | None = None,
        nc: NATS | None = None,
    ) -> None:
        self.kv = kv
        self.nc = nc  # sends a prompt again without a put (publish(prompt=True))
        self.store = store
        self.call = call
        # Replaceable (e.g. by the rollouts engine) as long as it stays a pure function of the
        # store: a periodic or start-up publish recomputes every document with it.
        self.resolver = resolver
        self.on_written = on_written
        self.writes = 0
        self.prompts = 0  # prompts sent again for documents left as they were
        self._lock = asyncio.Lock()

    async def publish(
        self,
        device_ids: Iterable[str] | None = None,
        *,
        force: bool = False,
        prompt: bool = False,
    ) -> dict[str, int]:
        """Recompute the desired document of these devices (all when None) from the store
        and put it to KV where it differs from the last one written (``force``: put anyway).
        ``prompt``: a device whose document is left as it was gets its put prompt again
        (``sb.desired.<id>`` with the recorded generation, as the bucket's republish sends
        it), without a put: a device that missed the first prompt (its link cut at that
        moment, the message lost) reads its key now rather than at its next timed read, up
        to ``poll_interval`` (900 s) later. One that already holds the revision ignores it.
        Returns ``{device_id: generation}`` for the devices written now. Unknown ids are
        ignored. Raises on a KV failure, after recording (and passing to ``on_written``)
        the puts that succeeded; nothing is recorded for a failed device, so the next
        ``publish`` of it retries."""
        ids = None if device_ids is None else sorted(set(device_ids))
        if ids == []:
            return {}
        async with self._lock:
            todo, same = await self.call(_plan, self.store, self.resolver, ids, force)
            if prompt and same:
                await self._prompt_again(same)
            written: dict[str, int] = {}
            failed: BaseException | None = None
            # Puts to different keys are independent: a chunk is in flight at once and
            # recorded in one transaction (one put, PubAck and commit at a time made a
            # 100 000-device start take ~85 s). A put whose record was lost to a crash is
            # only put again, unchanged, by the next publish.
            for i in range(0, len(todo), PUT_CHUNK):
                chunk = todo[i : i + PUT_CHUNK]
                revisions = await asyncio.gather(
                    *(self.kv.put(d.device_id, d.doc) for d in chunk), return_exceptions=True
                )
                done = [(d, r) for d, r in zip(chunk, revisions, strict=True) if isinstance(r, int)]
                if done:
                    await self.call(
                        self.store.record_desired_published_many,
                        [(d.device_id, r, d.doc_hash, d.bundle_ref, d.rollout_id) for d, r in done],
                    )
                for d, revision in done:
                    written[d.device_id] = revision
                    self._log(d, revision, logging.INFO if len(todo) <= LOG_EACH else logging.DEBUG)
                self.writes += len(done)
                failed = next((r for r in revisions if isinstance(r, BaseException)), None)
                if failed is not None:
                    break
            if len(todo) > LOG_EACH:
                log.info("desired documents written: %d of %d", len(written), len(todo))
        if written and self.on_written is not None:
            await self.on_written(written)
        if failed is not None:
            raise failed
        return written

    async def _prompt_again(self, generations: dict[str, int]) -> None:
        """Publish the put prompt of documents already written: the same subject and
        ``Nats-Sequence`` as the republish of their put, so the agent and the simulator
        treat it as that prompt (read the key unless they hold that revision already)."""
        if self.nc is None:
            log.debug("no connection to prompt %d device(s) again on", len(generations))
            return
        for device_id, generation in sorted(generations.items()):
            headers = {"Nats-Subject": desired_key(device_id), "Nats-Sequence": str(generation)}
            await self.nc.publish(desired_prompt(device_id), b"", headers=headers)
        self.prompts += len(generations)
        log.debug("desired prompts sent again: %d", len(generations))

    @staticmethod
    def _log(d: Desired, revision: int, level: int) -> None:
        log.log(
            level,
            "desired generation %d: %s%s",
            revision,
            d.bundle_ref or "no bundle",
            f" (rollout {d.rollout_id})" if d.rollout_id else "",
            extra={"device": d.device_id},
        )

    async def bucket_holds_records(self) -> bool:
        """Whether the bucket can be the one the recorded generations were written to: its
        stream has reached the newest recorded revision. A bucket lost and created again (by
        anything), or a JetStream store restored from an older copy, has not, and then every
        document must be put again whatever the DB says was written."""
        newest = await self.call(self.store.max_desired_generation)
        if not newest:
            return True
        status = await self.kv.status()
        return int(status.stream_info.state.last_seq or 0) >= newest
