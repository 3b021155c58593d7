"""The desired writer at a hub start, against a real nats-server and a real SQLite store:
documents the DB records as written are not put again while the bucket is the one they were
written to; a lost bucket, or one behind the recorded generations, gets every document."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nats
from nats.js.api import KeyValueConfig

from hub.store import Store
from hub.sync.desired_kv import PUT_CHUNK, DesiredWriter
from hub.sync.streams import ensure_desired_bucket
from protocol.subjects import DESIRED_BUCKET
from tests.harness.nats import NatsHub

N = PUT_CHUNK * 2 + 17  # more than one chunk of puts in flight


async def test_restart_puts_nothing_unless_the_bucket_lost_its_documents(
    tmp_path: Path, nats_hub: NatsHub
) -> None:
    store = Store.open(tmp_path / "hub.db")
    ids = [f"d{i:04d}" for i in range(N)]
    for d in ids:
        store.upsert_device(d, "acme")
    pool = ThreadPoolExecutor(max_workers=1)

    async def call(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    nc = await nats.connect(nats_hub.url)
    js = nc.jetstream()

    async def start() -> tuple[DesiredWriter, dict[str, int]]:
        # What SyncService.start does with the bucket and the writer.
        kv, created = await ensure_desired_bucket(js)
        w = DesiredWriter(kv, store, call)
        force = created or not await w.bucket_holds_records()
        return w, await w.publish(None, force=force)

    try:
        w, first = await start()
        assert sorted(first) == ids
        assert sorted(store.desired_published()) == ids
        assert {r["generation"] for r in store.desired_published().values()} == set(first.values())
        entry = await w.kv.get(ids[-1])
        assert entry.revision == first[ids[-1]]

        _, again = await start()  # a restart: same bucket, nothing changed
        assert again == {}

        # The bucket lost (JetStream store wiped): the hub creates it and puts everything.
        await js.delete_key_value(DESIRED_BUCKET)
        w, after_loss = await start()
        assert sorted(after_loss) == ids
        assert (await w.kv.get(ids[0])).value is not None

        # The bucket created again by something else (or restored from an older copy): it
        # exists, but is behind the generations the DB recorded, so everything is put again.
        await js.delete_key_value(DESIRED_BUCKET)
        await js.create_key_value(KeyValueConfig(bucket=DESIRED_BUCKET, history=5))
        w, behind = await start()
        assert sorted(behind) == ids
        for d in (ids[0], ids[-1]):
            assert (await w.kv.get(d)).revision == behind[d]
    finally:
        await nc.close()
        pool.shutdown()
        store.close()
