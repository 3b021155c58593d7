"""What the operator assigns is what runs, and a rollout always ends — on real parts: a real
`signalbeam-hub run`, real `signalbeam-agent run` processes (each with its supervised leaf),
a real engine (both, through the `engine` fixture) and the test registry.

- A field override (`signalbeam-agent apply`) takes generation "newest + 1"; the hub's
  next revision for the device carries that very number. The assigned bundle must run and
  be reported (it used to be ignored: the override's deployment was reused and reported
  healthy under the hub's generation).
- Rollouts of a crash-looping bundle end failed/paused with the agent's reason, none stuck
  `running` (the hub used to lose the rolled_back verdict once the rollback target's row
  was the newest).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engines import EngineHandle
from tests.harness.registry import Registry
from tests.harness.sync_e2e import REPO, Device, hello_spec, running_fleet
from tests.harness.sync_hub import SyncHub, new_token
from tests.harness.wait import eventually
from tui.client import ApiError, HubClient

# Each test runs a whole device story (several deployments or rollouts) on a loaded machine.
pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.timeout(900)]
WAIT = 150.0  # bound on one deployment or rollout on a loaded machine
CRASH_ROUNDS = 2  # rollouts per device per engine (two devices each); odd rounds cut links


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncHub]:
    proc = SyncHub(tmp_path_factory.mktemp("truthhub") / "data")
    yield proc
    assert proc.stop() == 0, proc.proc.log_tail() if proc.proc else ""


@pytest.fixture
async def admin(hub: SyncHub) -> AsyncIterator[HubClient]:
    async with HubClient(hub.url, hub.admin_key, timeout=60) as c:
        yield c


def variant(registry: Registry, version: str, image: str, **env: str) -> dict[str, Any]:
    spec = hello_spec(registry, "1.0.0")
    spec["version"] = version
    spec["containers"][0]["image"] = registry.ref(image)
    spec["containers"][0]["env"].update(env)
    return spec


async def push(admin: HubClient, spec: dict[str, Any]) -> None:
    try:
        await admin.call("bundles.push", {"spec": spec})
    except ApiError as exc:
        if exc.code != "conflict":  # already pushed by the other engine's run
            raise


async def reported(admin: HubClient, device: str) -> dict[str, Any]:
    got = await admin.call("devices.get", {"id": device})
    return ((got.get("reported") or {}).get("state") or {}).get("deployment") or {}


async def healthy_on(admin: HubClient, device: str, ref: str) -> bool:
    dep = await reported(admin, device)
    return (dep.get("bundle_ref"), dep.get("status")) == (ref, "healthy")


async def online(admin: HubClient, ids: tuple[str, ...]) -> bool:
    items = (await admin.call("devices.list", {}))["items"]
    return set(ids) <= {d["id"] for d in items if d["status"] == "online"}


def local_apply(dev: Device, spec: dict[str, Any]) -> int:
    """`signalbeam-agent apply FILE` as a field tech runs it; returns the generation."""
    path = dev.dir / f"override-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    out = subprocess.run(
        [sys.executable, "-m", "agent", "apply", "--config", str(dev.config), str(path),
         "--json"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return int(json.loads(out.stdout)["generation"])


def versions_running(dev: Device) -> list[str]:
    return sorted(
        str((c.get("Labels") or {}).get("io.signalbeam.version"))
        for c in dev.containers()
        if c.get("State") == "running"
    )


async def test_an_assignment_with_the_overrides_generation_runs(
    hub: SyncHub, admin: HubClient, engine: EngineHandle, registry: Registry, tmp_path: Path
) -> None:
    dev_id = f"truth-id-{engine.kind}"
    one = variant(registry, "1.0.0", "sbtest/hello:1.0")
    override = variant(registry, "2.0.0", "sbtest/hello:2.0")
    assigned = variant(registry, "2.1.0", "sbtest/hello:2.0", VARIANT="assigned")
    for s in (one, override, assigned):
        await push(admin, s)
    tok = await new_token(admin, 1)
    with running_fleet(hub, engine, tmp_path, (dev_id,), tok) as devices:
        dev = devices[dev_id]
        await eventually(lambda: online(admin, (dev_id,)), timeout=60, what="online")
        await admin.call("assign", {"target": f"device:{dev_id}", "bundle": "hello@1.0.0"})
        await eventually(
            lambda: healthy_on(admin, dev_id, "hello@1.0.0"), timeout=WAIT, what="1.0 healthy"
        )
        # The field override takes "newest + 1". Make that the number the hub's next put
        # gets (the bucket's revision counter is shared by every device): apply again until
        # the override's generation is one above the newest revision the hub wrote.
        newest = hub.query("SELECT max(generation) FROM desired_published")[0][0]
        gen = local_apply(dev, override)
        for _ in range(20):
            if gen > newest:
                break
            gen = local_apply(dev, override)
        assert gen == newest + 1, (gen, newest)
        await eventually(
            lambda: versions_running(dev) == ["2.0.0"], timeout=WAIT, what="the override runs"
        )
        await eventually(
            lambda: healthy_on(admin, dev_id, "hello@2.0.0"), timeout=WAIT, what="reported"
        )
        await admin.call("assign", {"target": f"device:{dev_id}", "bundle": "hello@2.1.0"})

        async def collided() -> bool:
            rows = hub.query(
                "SELECT generation FROM desired_published WHERE device_id = ?", (dev_id,)
            )
            return bool(rows) and rows[0][0] == gen

        await eventually(collided, timeout=30, what="the hub's revision took the same number")
        # What the operator assigned runs, and is what the device reports.
        await eventually(
            lambda: versions_running(dev) == ["2.1.0"], timeout=WAIT, what="the assignment runs"
        )
        await eventually(
            lambda: healthy_on(admin, dev_id, "hello@2.1.0"), timeout=WAIT, what="reported"
        )
        dep = await reported(admin, dev_id)
        assert (dep["generation"], dep["source"]) == (gen, "hub"), dep
        conn = dev.db()
        try:
            rows = conn.execute(
                "SELECT source, bundle_ref, status FROM deployments WHERE generation = ?"
                " ORDER BY id",
                (gen,),
            ).fetchall()
        finally:
            conn.close()
        # Two deployments under one number, each its own revision's.
        assert rows == [("local", "hello@2.0.0", "healthy"), ("hub", "hello@2.1.0", "healthy")]


async def until_final(admin: HubClient, rollout_id: str) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        r: dict[str, Any] = await admin.call("rollouts.get", {"id": rollout_id})
        return r if r["state"] in ("paused", "failed", "succeeded", "aborted") else None

    result: dict[str, Any] = await eventually(
        final, f"rollout {rollout_id} ends", timeout=WAIT, interval=0.5
    )
    return result


def stored_revision(dev: Device, rollout_id: str) -> int | None:
    conn = dev.db()
    try:
        row = conn.execute(
            "SELECT generation FROM desired_revisions WHERE rollout_id = ?", (rollout_id,)
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else int(row[0])


def rolled_back_and_recovered(dev: Device, rollout_id: str) -> bool:
    """The rollout's generation is rolled back and a healthy deployment was written after."""
    gen = stored_revision(dev, rollout_id)
    conn = dev.db()
    try:
        back = conn.execute(
            "SELECT max(finished_at) FROM deployments WHERE generation = ?"
            " AND status = 'rolled_back'",
            (gen,),
        ).fetchone()[0]
        if back is None:
            return False
        later = conn.execute(
            "SELECT 1 FROM deployments WHERE status = 'healthy' AND finished_at > ?", (back,)
        ).fetchone()
    finally:
        conn.close()
    return later is not None


async def test_crash_looping_rollouts_end_with_the_agents_reason(
    hub: SyncHub, admin: HubClient, engine: EngineHandle, registry: Registry, tmp_path: Path
) -> None:
    ids = (f"truth-crash-{engine.kind}-1", f"truth-crash-{engine.kind}-2")
    await push(admin, variant(registry, "1.0.0", "sbtest/hello:1.0"))
    crash = variant(registry, "1.0.0", "sbtest/crash:1.0")
    crash["bundle"] = "crasher"
    await push(admin, crash)
    tok = await new_token(admin, len(ids))
    outcomes: list[tuple[str, str, str]] = []
    with running_fleet(hub, engine, tmp_path, ids, tok) as devices:
        await eventually(lambda: online(admin, ids), timeout=60, what="online")
        for d in ids:
            await admin.call("assign", {"target": f"device:{d}", "bundle": "hello@1.0.0"})
        for d in ids:
            await eventually(
                lambda d=d: healthy_on(admin, d, "hello@1.0.0"), timeout=WAIT, what="1.0"
            )
        for round_ in range(CRASH_ROUNDS):
            started = [
                (await admin.call("rollouts.start",
                                  {"bundle": "crasher@1.0.0", "target": f"device:{d}"}))["id"]
                for d in ids
            ]  # fmt: skip
            if round_ % 2:
                # The rollback finishing before the hub hears of it: hold the links cut from
                # the moment each agent stored the rollout's revision until its rollback
                # target is healthy again, so the rolled_back row and the target's healthy
                # row reach the hub together.
                for d, rid in zip(ids, started, strict=True):
                    await eventually(
                        lambda d=d, rid=rid: stored_revision(devices[d], rid) is not None,
                        timeout=WAIT,
                        what="the revision stored",
                    )
                    devices[d].cut()
                for d, rid in zip(ids, started, strict=True):
                    await eventually(
                        lambda d=d, rid=rid: rolled_back_and_recovered(devices[d], rid),
                        timeout=WAIT,
                        what="rolled back on the device",
                    )
                    devices[d].restore()
            for rid in started:
                r = await until_final(admin, rid)
                dev = r["devices"][0]
                outcomes.append((r["state"], dev["state"], dev["reason"]))
                await admin.call("rollouts.abort", {"id": rid})
            # Abort gives each device its 1.0 assignment back: a new revision it runs.
            for d in ids:
                await eventually(
                    lambda d=d: healthy_on(admin, d, "hello@1.0.0"), timeout=WAIT, what="back"
                )
    assert len(outcomes) == CRASH_ROUNDS * len(ids)
    for state, device_state, reason in outcomes:
        assert state in ("paused", "failed"), outcomes
        assert device_state == "Failed", outcomes
        assert reason.startswith("rolled back:") and "crash" in reason, outcomes
