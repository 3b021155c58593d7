"""`signalbeam-hub run` supervising its children: a killed nats-server comes back, SIGTERM
stops every child by PID, and a hub killed with -9 leaves no orphans."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from tests.harness.wait import eventually
from tests.integration.test_hub_api import HubProcess
from tui.client import ApiError


def children(pid: int) -> dict[str, int]:
    """Child processes of ``pid`` by program name."""
    found: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue  # the thread ended between the listing and the read
        for child in kids:
            try:
                name = Path(f"/proc/{child}/comm").read_text().strip()
            except OSError:
                continue
            found[name] = int(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; its parent (the harness) reaps it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def test_restart_and_clean_shutdown(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "data")
    assert hub.proc is not None
    try:
        kids = children(hub.proc.pid)
        assert set(kids) >= {"nats-server", "litestream"}, kids
        old_nats = kids["nats-server"]
        os.kill(old_nats, signal.SIGKILL)
        await eventually(lambda: children(hub.proc.pid).get("nats-server", old_nats) != old_nats)  # type: ignore[union-attr]
        await eventually(lambda: hub.http("/health/ready")[0] == 200)
        # The hub's own connection reconnects; the API answers again.
        async with hub.client() as c:
            for _ in range(50):
                try:
                    await c.call("devices.list")
                    break
                except ApiError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("API never answered after the nats-server restart")
        assert 'signalbeam_child_restarts_total{child="nats-server"} 1.0' in hub.http("/metrics")[1]
        kids = children(hub.proc.pid)
    finally:
        assert hub.stop() == 0
    assert not any(alive(p) for p in kids.values()), kids
    assert not (hub.data / "hub.pid").exists()


async def test_hub_killed_leaves_no_orphans(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "data", litestream=False)
    assert hub.proc is not None
    kids = children(hub.proc.pid)
    hub.proc.kill9()
    hub.stop()
    await eventually(lambda: not any(alive(p) for p in kids.values()))
