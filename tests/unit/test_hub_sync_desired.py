"""DesiredWriter against a real nats-server and a real SQLite store: a document per device in
KV ``desired``, written only when it changes, with the KV revision recorded as generation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nats
import pytest

from hub.store import Store
from hub.sync.desired_kv import DesiredWriter
from hub.sync.streams import ensure_desired_bucket
from protocol.desired import DesiredState
from protocol.subjects import desired_prompt
from tests.harness.nats import NatsHub
from tests.harness.wait import eventually


def spec(version: str) -> dict[str, Any]:
    return {
        "bundle": "app",
        "version": version,
        "containers": [{"name": "web", "image": "registry.local/web:1.0"}],
    }


@pytest.fixture
async def writer(tmp_path: Path, nats_hub: NatsHub) -> AsyncIterator[DesiredWriter]:
    store = Store.open(tmp_path / "hub.db")
    for d in ("d1", "d2"):
        store.upsert_device(d, "acme", tags=["lab"])
    for v in ("1.0.0", "2.0.0"):
        store.put_bundle_version("app", v, spec(v), f"hash-{v}", "")
    pool = ThreadPoolExecutor(max_workers=1)

    async def call(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    nc = await nats.connect(nats_hub.url)
    kv, created = await ensure_desired_bucket(nc.jetstream())
    assert created
    try:
        yield DesiredWriter(kv, store, call, nc=nc)
    finally:
        await nc.close()
        pool.shutdown()
        store.close()


async def doc(w: DesiredWriter, device: str) -> tuple[DesiredState, int]:
    entry = await w.kv.get(device)
    assert entry.value is not None and entry.revision is not None
    return DesiredState.from_json(entry.value), entry.revision


async def test_writes_only_on_change_and_records_the_revision(writer: DesiredWriter) -> None:
    w = writer
    first = await w.publish()
    assert set(first) == {"d1", "d2"}
    state, rev = await doc(w, "d1")
    assert state.spec is None and rev == first["d1"]
    assert await w.publish() == {}  # nothing changed: nothing written

    w.store.assign("tag", "lab", "app", "1.0.0")
    written = await w.publish(["d1", "d2", "nope"])
    assert set(written) == {"d1", "d2"}
    state, rev = await doc(w, "d2")
    assert state.spec == spec("1.0.0") and state.content_hash == "hash-1.0.0"
    assert state.generation == 0 and rev == written["d2"]
    assert w.store.desired_published(["d2"])["d2"]["generation"] == rev

    w.store.assign("device", "d1", "app", "2.0.0")
    assert set(await w.publish()) == {"d1"}
    assert (await doc(w, "d1"))[0].spec == spec("2.0.0")
    assert set(await w.publish(force=True)) == {"d1", "d2"}

    # A decommissioned device gets an explicit "run nothing", not a missing key.
    w.store.decommission_device("d2")
    assert set(await w.publish(["d2"])) == {"d2"}
    assert (await doc(w, "d2"))[0].spec is None


async def test_a_prompt_again_is_the_put_prompt_without_a_put(
    writer: DesiredWriter, nats_hub: NatsHub
) -> None:
    """``prompt=True`` (the rollouts engine's re-publish of devices it waits on): a document
    left as it was is not put again, but its prompt is sent again, as the bucket's republish
    sent it (``Nats-Sequence``: the recorded generation), so a device that missed the first
    one reads its key; a changed document is put (that put is its prompt)."""
    w = writer
    first = await w.publish()
    nc = await nats.connect(nats_hub.url)
    got: list[tuple[str, str]] = []

    async def heard(msg: Any) -> None:
        got.append((msg.subject, (msg.headers or {}).get("Nats-Sequence", "")))

    try:
        await nc.subscribe(desired_prompt("*"), cb=heard)
        await nc.flush()
        assert await w.publish(["d1", "nope"], prompt=True) == {}  # nothing put
        await eventually(lambda: got, "the prompt sent again")
        assert got == [(desired_prompt("d1"), str(first["d1"]))]
        assert (await doc(w, "d1"))[1] == first["d1"] and w.prompts == 1
        w.store.assign("device", "d2", "app", "1.0.0")
        written = await w.publish(["d2"], prompt=True)  # changed: put, its put prompts
        await eventually(lambda: len(got) == 2, "the put's prompt")
        assert got[1] == (desired_prompt("d2"), str(written["d2"])) and w.prompts == 1
        assert await w.publish(["d1"]) == {} and len(got) == 2  # without prompt: silent
    finally:
        await nc.close()


async def test_rollout_id_comes_from_the_rollout_targeting_that_version(
    writer: DesiredWriter,
) -> None:
    w = writer
    now = "2026-01-01T00:00:00.000Z"
    w.store.conn.execute(
        "INSERT INTO rollouts (id, bundle, version, target_kind, target, created_at, updated_at)"
        " VALUES ('r1', 'app', '2.0.0', 'device', 'd1', ?, ?)",
        (now, now),
    )
    w.store.conn.execute(
        "INSERT INTO rollout_targets (rollout_id, device_id, updated_at) VALUES ('r1', 'd1', ?)",
        (now,),
    )
    w.store.assign("device", "d1", "app", "2.0.0")
    await w.publish()
    assert (await doc(w, "d1"))[0].rollout_id == "r1"
    assert (await doc(w, "d2"))[0].rollout_id is None


async def test_concurrent_publishes_write_each_change_once(writer: DesiredWriter) -> None:
    w = writer
    await w.publish()
    w.store.assign("tag", "lab", "app", "1.0.0")
    results = await asyncio.gather(*(w.publish(["d1", "d2"]) for _ in range(5)))
    assert sum(len(r) for r in results) == 2
