"""Issue 19 items 1 and 5 with a real `signalbeam-agent run` process (its supervised leaf,
its SQLite store) against a real `signalbeam-hub run`:

- another device, with its own stolen credentials, publishes on its own subject every
  ``Nats-Msg-Id`` the agent's first batches would have had: every row the agent records
  still reaches the hub;
- the agent's database is deleted while it is stopped: the new store numbers from 1 again
  and its rows are applied (a ``store_reset`` event), not dropped as replays.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.report import MSG_ID_HEADER, ReportBatch
from protocol.subjects import JS_DOMAIN, report
from tests.harness.engines import EngineHandle
from tests.harness.sync_e2e import Device
from tests.harness.sync_hub import (
    SyncHub,
    applied,
    device_nc,
    enroll_device,
    event_rows,
    new_token,
)
from tests.harness.wait import eventually

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    # The default of new hubs: nats-server in operator mode, device JWTs (issue 16).
    proc = SyncHub(
        tmp_path_factory.mktemp("integrity-agents") / "data", init_flags=["--nats-auth", "jwt"]
    )
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


def agent_rows(dev: Device) -> tuple[int, int]:
    """(unsent outbox rows, outbox counter) of the agent's store, read beside it."""
    conn = dev.db()
    try:
        pending = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
        counter = conn.execute("SELECT value FROM sequences WHERE name = 'outbox'").fetchone()
        return int(pending[0]), int(counter[0] if counter else 0)
    except sqlite3.OperationalError:  # the agent is creating its store right now
        return -1, -1
    finally:
        conn.close()


def wipe(path: Path) -> None:
    """The agent's database deleted (its WAL and shared memory with it)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def hub_event_seqs(hub: SyncHub, device: str) -> list[int]:
    """The device's own events the hub holds (``seq`` = the device's event seq)."""
    return [
        r[0]
        for r in hub.query(
            "SELECT seq FROM events WHERE device_id = ? AND seq IS NOT NULL ORDER BY id",
            (device,),
        )
    ]


def synced(hub: SyncHub, dev: Device) -> bool:
    pending, counter = agent_rows(dev)
    return pending == 0 and counter > 0 and applied(hub, dev.device_id) == counter


async def test_a_real_agent_against_forged_ids_and_a_deleted_store(
    hub: SyncHub, _podman_service: EngineHandle, tmp_path: Path
) -> None:
    async with hub.client() as admin:
        tok = await new_token(admin, uses=2)
    attacker = await enroll_device(hub, tok, "forger-x")
    dev = Device(tmp_path, "real-r", hub, _podman_service, tok)
    assert dev.enroll_result.returncode == 0, dev.enroll_result.stderr
    nc = await device_nc(hub, attacker)
    try:
        js = nc.jetstream(domain=JS_DOMAIN)
        body = ReportBatch("forger-x", tuple(event_rows(1, 1))).to_json()
        for first in (1, 2):
            for last in range(first, 80):
                await js.publish(
                    report("forger-x"), body, headers={MSG_ID_HEADER: f"real-r:{first}-{last}"}
                )
    finally:
        await nc.close()

    try:
        dev.start()
        await eventually(
            lambda: synced(hub, dev) and hub_event_seqs(hub, "real-r") == dev.event_seqs(),
            timeout=120,
            what="every row the agent recorded applied, every event held",
        )
        assert hub.query(
            "SELECT count(*) FROM events WHERE device_id = 'real-r' AND kind = 'sync_gap'"
        ) == [(0,)]
        dev.proc.stop(timeout=30)  # type: ignore[union-attr]
        first_life = len(hub_event_seqs(hub, "real-r"))

        wipe(dev.data / "agent.db")
        dev.start()
        await eventually(
            lambda: bool(
                hub.query(
                    "SELECT 1 FROM events WHERE device_id = 'real-r' AND kind = 'store_reset'"
                )
            ),
            timeout=120,
            what="the new store announced",
        )

        def second_life_held() -> bool:
            seqs = dev.event_seqs()
            held = hub_event_seqs(hub, "real-r")
            return (
                synced(hub, dev)
                and bool(seqs)
                and seqs[0] == 1  # numbered from 1 again
                and len(held) == first_life + len(seqs)
                and held[first_life:] == seqs
            )

        await eventually(second_life_held, timeout=120, what="every event of the new store held")
    finally:
        dev.stop()
