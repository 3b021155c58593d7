"""litestream really replicating the hub DB, and `signalbeam-hub restore` bringing it back:
write through the API, let it replicate, delete the DB, restore, compare every table."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hub.children import find_binary
from tests.integration.test_hub_api import HubProcess, seed_devices, spec


def dump(db: Path) -> dict[str, list[Any]]:
    """Every row of every table (schema_migrations and sqlite_sequence included), except
    litestream's own bookkeeping tables, whose counters move on with every sync."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE '\\_litestream\\_%' ESCAPE '\\' ORDER BY name"
            )
        ]
        # Sorted in Python: the metric tables are WITHOUT ROWID (migration 4).
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    finally:
        conn.close()


def remove_db(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def restore_cli(data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "restore", "--data", str(data), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def wait_replicated(hub: HubProcess, probe: Path) -> None:
    """Poll a scratch restore until it holds everything the live DB holds (bounded)."""
    binary = find_binary("litestream")
    url = (hub.data / "replica").as_uri()
    want: dict[str, list[Any]] = {}
    got: dict[str, list[Any]] = {}
    for _ in range(60):
        # The hub goes on writing after an API call returns (the desired-state writer
        # records what it published), so compare against the live DB as it is now.
        want = dump(hub.data / "hub.db")
        remove_db(probe)
        done = subprocess.run(
            [binary, "restore", "-o", str(probe), url], capture_output=True, timeout=60, check=False
        )
        if done.returncode == 0:
            got = dump(probe)
            if got == want:
                return
        time.sleep(0.5)
    differing = sorted(t for t in set(want) | set(got) if want.get(t) != got.get(t))
    raise AssertionError(f"replica never caught up; differing tables: {differing}")


async def test_replicate_delete_restore_compare(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "data", seed=seed_devices)
    try:
        async with hub.client() as c:
            await c.call("bundles.push", {"spec": spec("1.2.0")})
            await c.call("bundles.push", {"spec": spec("1.3.0")})
            await c.call("groups.create", {"name": "lab"})
            for dev in ("dev-0", "dev-1"):
                await c.call("groups.add", {"name": "lab", "device": dev})
            await c.call("devices.tag", {"id": "dev-3", "tag": "prod"})
            await c.call("assign", {"target": "group:lab", "bundle": "warehouse-monitor@1.3.0"})
            await c.call("assign", {"target": "tag:prod", "bundle": "warehouse-monitor@1.2.0"})
            await c.call("tokens.create", {"tenant": "acme", "max_uses": 5})
            await c.call("keys.create", {"name": "viewer"})
        wait_replicated(hub, tmp_path / "probe.db")

        refused = restore_cli(hub.data)
        assert refused.returncode == 2 and "running" in refused.stderr
    finally:
        assert hub.stop() == 0

    db = hub.data / "hub.db"
    before = dump(db)
    assert before["bundle_versions"] and before["assignments"] and before["events"]
    remove_db(db)

    done = restore_cli(hub.data)
    assert done.returncode == 0, done.stderr
    assert dump(db) == before

    again = restore_cli(hub.data)
    assert again.returncode == 2 and "--force" in again.stderr
    forced = restore_cli(hub.data, "--force")
    assert forced.returncode == 0, forced.stderr
    assert list(hub.data.glob("hub.db.before-restore-*"))
    assert dump(db) == before

    # The restored DB serves the API as before.
    hub.start()
    try:
        async with hub.client() as c:
            got = await c.call("devices.get", {"id": "dev-0"})
            assert got["desired"]["via"] == "group:lab"
    finally:
        assert hub.stop() == 0
