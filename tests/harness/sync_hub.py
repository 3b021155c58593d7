"""Shared helpers for the hub-side sync tests (no tests here): a real `signalbeam-hub run`
with sync flags, enrollment, device connections with a device's own credentials, and
report batches built the way the agent builds them."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from agent.sync.enroll import enroll
from protocol import natsauth
from protocol.enroll import DeviceFacts, EnrollReply
from protocol.report import MSG_ID_HEADER, ReportBatch, ReportRow
from protocol.subjects import report
from tests.harness.procs import ManagedProcess
from tests.integration.test_hub_api import HubProcess
from tui.client import HubClient

FACTS = DeviceFacts("box", "x86_64", "Debian GNU/Linux 12", "podman", "0.1.0")


class SyncHub(HubProcess):
    """`signalbeam-hub run` with the sync knobs tests need (a short offline grace)."""

    def __init__(
        self,
        data: Path,
        *,
        grace: int = 90,
        litestream: bool = False,
        init_flags: Sequence[str] = (),
        signed_bundles: bool = False,
    ) -> None:
        self.grace = grace
        super().__init__(
            data, litestream=litestream, init_flags=init_flags, signed_bundles=signed_bundles
        )

    def start(self) -> None:
        self.proc = ManagedProcess(
            "hub",
            [
                sys.executable,
                "-m",
                "hub.cli",
                "run",
                "--data",
                str(self.data),
                "--offline-grace",
                str(self.grace),
            ],
            self.data.parent / f"{self.data.name}-hub.log",
        )
        self.proc.wait_ready(lambda: self.http("/health/ready")[0] == 200, timeout=60)

    @property
    def port(self) -> int:
        return int(self.ports["client"])

    @property
    def enroll_url(self) -> str:
        return str(self.init["enroll_url"])

    def secret(self, name: str) -> str:
        return str(json.loads((self.data / "secrets.json").read_text())[name])

    async def hub_nc(self) -> NATS:
        secret = self.secret("hub_password")
        return await nats.connect(
            f"nats://127.0.0.1:{self.port}",
            user="hub",
            password=secret,
            **natsauth.auth_options("", secret),
        )

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.data / 'hub.db'}?mode=ro", uri=True, timeout=10)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self.db()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float:
        """A Prometheus sample from /metrics (0 when absent)."""
        _, text = self.http("/metrics")
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            sample, _, lbl = head.partition("{")
            if sample != name:
                continue
            got = dict(p.split("=", 1) for p in lbl.rstrip("}").split(",") if "=" in p)
            if all(got.get(k) == f'"{v}"' for k, v in labels.items()) or not want:
                total += float(value)
        return total


def module_hub(name: str, **kw: Any) -> Any:
    """A module-scoped ``hub`` fixture: a ``SyncHub`` (``kw`` passed on) in a temp dir named
    ``name``, stopped after the module, its exit status checked. In a test module:
    ``hub = module_hub("rollhub")``."""

    @pytest.fixture(scope="module")
    def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
        proc = SyncHub(tmp_path_factory.mktemp(name) / "data", **kw)
        yield proc
        assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""

    return hub


def admin_of_hub(timeout: float = 30.0) -> Any:
    """An ``admin`` fixture: the operator API client of the module's ``hub`` (admin key)."""

    @pytest.fixture
    async def admin(hub: SyncHub) -> AsyncIterator[HubClient]:
        async with HubClient(hub.url, hub.admin_key, timeout=timeout) as c:
            yield c

    return admin


def applied(hub: SyncHub, device: str) -> int:
    """The hub's ``last_applied_seq`` for ``device`` (-1 before its first batch)."""
    rows = hub.query("SELECT last_applied_seq FROM device_sync WHERE device_id = ?", (device,))
    return int(rows[0][0]) if rows else -1


def event_seqs(hub: SyncHub, device: str, kind: str = "test.tick") -> list[int]:
    """The device's event seqs of ``kind`` the hub holds, in the order it applied them."""
    return [
        r[0]
        for r in hub.query(
            "SELECT seq FROM events WHERE device_id = ? AND kind = ? ORDER BY id", (device, kind)
        )
    ]


async def new_token(admin: HubClient, uses: int = 1) -> str:
    """A registration token for tenant ``acme`` good for ``uses`` enrollments."""
    return str((await admin.call("tokens.create", {"tenant": "acme", "max_uses": uses}))["token"])


async def enroll_device(
    hub: SyncHub, token: str, device_id: str, tags: tuple[str, ...] = ()
) -> EnrollReply:
    return await enroll(hub.enroll_url, token, device_id, FACTS, tags, timeout=10)


async def device_nc(hub: SyncHub, creds: EnrollReply, **kw: Any) -> NATS:
    """A client connection straight to the hub with the device's own user (what its leaf
    does on its behalf), with the agent's per-device inbox prefix."""
    return await nats.connect(
        f"nats://127.0.0.1:{hub.port}",
        inbox_prefix=f"_INBOX.{creds.device_id}",
        **natsauth.enrolled_login(creds),
        **kw,
    )


def event_rows(
    first: int, n: int, *, tag: str = "t", first_event: int | None = None
) -> list[ReportRow]:
    """``n`` outbox rows of kind ``event`` with seqs ``first..``; event seqs follow too."""
    ev0 = first if first_event is None else first_event
    now = time.time()
    return [
        ReportRow(
            first + i,
            "event",
            now,
            {
                "seq": ev0 + i,
                "kind": "test.tick",
                "severity": "info",
                "message": f"{tag} {i}",
                "data": {"i": i},
                "ts": now,
                "mono": 1.0,
            },
        )
        for i in range(n)
    ]


async def publish_batch(js: Any, batch: ReportBatch, msg_id: str | None = None) -> Any:
    return await js.publish(
        report(batch.device_id),
        batch.to_json(),
        headers={MSG_ID_HEADER: msg_id or batch.msg_id},
    )
