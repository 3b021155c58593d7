"""A burst of enrollments through the real ``sb.hub.enroll`` path of a real hub: 50 devices
enroll at once with the agent's own request (bootstrap login, token, reply), every one
succeeds, the reloads are shared (far fewer than 50), and every device then logs in with its
own credentials and reads its own desired document."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from agent.sync.enroll import enroll
from protocol.enroll import EnrollReply
from protocol.subjects import DESIRED_BUCKET, JS_DOMAIN
from tests.harness.sync_hub import FACTS, SyncHub

N = 50
WAIT = 120.0


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[SyncHub]:
    h = SyncHub(tmp_path / "data")
    yield h
    assert h.stop() == 0, h.proc.log_tail() if h.proc else ""


def metric(hub: SyncHub, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{hub.ports['http']}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_fifty_concurrent_enrollments_all_succeed_and_log_in(hub: SyncHub) -> None:
    async with hub.client() as admin:
        token = (await admin.call("tokens.create", {"tenant": "burst", "max_uses": N}))["token"]
    ids = [f"burst-{i:02d}" for i in range(N)]
    replies: list[EnrollReply] = await asyncio.wait_for(
        asyncio.gather(*(enroll(hub.enroll_url, token, d, FACTS, timeout=60) for d in ids)),
        WAIT,
    )
    assert [r.device_id for r in replies] == ids
    reloads = metric(hub, "signalbeam_enroll_reloads_total")
    assert 1 <= reloads < N, reloads

    async def login(r: EnrollReply) -> bytes | None:
        nc = await nats.connect(
            f"nats://127.0.0.1:{hub.port}",
            user=r.nats_user,
            password=r.nats_password,
            inbox_prefix=f"_INBOX.{r.device_id}",
            allow_reconnect=False,
            connect_timeout=10,
        )
        try:
            # The one JetStream read a device may make: a direct get of its own key.
            subject = f"$JS.{JS_DOMAIN}.API.DIRECT.GET.KV_{DESIRED_BUCKET}.$KV.{DESIRED_BUCKET}."
            msg = await nc.request(subject + r.device_id, b"", timeout=10)
            return msg.data
        finally:
            await nc.close()

    docs = await asyncio.wait_for(asyncio.gather(*(login(r) for r in replies)), WAIT)
    assert all(docs), "every enrolled device finds its desired document"
