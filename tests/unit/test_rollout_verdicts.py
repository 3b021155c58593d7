"""A rollout always ends: the verdict of every generation it wrote reaches the rollout
machine, whatever the device reports next (a real SQLite fleet store, the real ingest
applier with the rollouts' row handler, ``engine.tick``; no NATS).

The field report: a crash-looping version rolled back on the device in 2 s, and in about a
third of tries the rollout stayed ``running`` with the device ``Updating`` and no reason.
The agent writes ``applying`` and ``rolled_back`` for the rollout's generation G and then
``healthy`` for the rollback target (an older generation); the hub judged from the newest
row only, so whenever the rollback target's row arrived before the controller's next tick,
G's verdict was gone.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundles.validate import load_file
from hub.api.dispatch import dispatch
from hub.api.handlers import HANDLERS
from hub.rollouts import engine
from hub.rollouts.api import VERBS
from hub.rollouts.service import record_deployments
from hub.store import Store
from hub.sync.apply import Applier, Fetched
from protocol.errors import is_error
from protocol.report import ReportBatch, ReportRow
from protocol.subjects import report

EXAMPLES = Path(__file__).resolve().parents[2] / "bundles" / "examples" / "warehouse-monitor"
OLD, NEW = "warehouse-monitor@1.2.0", "warehouse-monitor@1.3.0"
WHY = "crash-looping: relay exited 3 times (code 127)"


class Fleet:
    """Devices whose agents report through the real applier, as ingest applies them."""

    def __init__(self, store: Store, devices: int) -> None:
        self.store = store
        _, self.admin = store.create_api_key("admin", "admin")
        self.handlers = {**HANDLERS, **VERBS}
        self.applier = Applier()
        self.applier.row_handlers.append(record_deployments)
        for v in ("1.2.0", "1.3.0"):
            assert not is_error(self.call("bundles.push", {"spec": spec(v)}))
        self.call("groups.create", {"name": "lab"})
        self.ids = [f"dev-{i:02d}" for i in range(devices)]
        self.seq = dict.fromkeys(self.ids, 0)
        for d in self.ids:
            store.upsert_device(d, "acme")
            store.set_device_status(d, "online")
            self.call("groups.add", {"name": "lab", "device": d})
        self.call("assign", {"target": "group:lab", "bundle": OLD})

    def call(self, verb: str, body: Any = None) -> dict[str, Any]:
        return dispatch(self.store, verb, json.dumps(body or {}).encode(), self.admin,
                        self.handlers).body  # fmt: skip

    def send(self, device: str, rows: list[tuple[str, dict[str, Any]]]) -> None:
        """One report batch of ``(kind, payload)`` rows, applied as ingest applies it."""
        if not rows:
            return
        out = []
        for kind, payload in rows:
            self.seq[device] += 1
            out.append(ReportRow(self.seq[device], kind, 1.0, payload))
        batch = ReportBatch(device, tuple(out), prev_seq=out[0].seq - 1)
        fetched = Fetched(report(device), batch.to_json(), batch.msg_id, 1)
        result = self.applier.apply_fetch(self.store, [fetched])
        assert result.actions == ["ack"], result

    def rollout(self) -> dict[str, Any]:
        out = self.call("rollouts.start", {"bundle": NEW, "target": "group:lab"})
        assert not is_error(out), out
        return out


def spec(version: str) -> dict[str, Any]:
    return load_file(EXAMPLES / f"{version}.yaml").to_dict()


def dep(gen: int, ref: str, status: str, reason: str | None = None,
        source: str = "hub") -> tuple[str, dict[str, Any]]:  # fmt: skip
    return "deployment", {"generation": gen, "source": source, "bundle_ref": ref,
                          "status": status, "reason": reason}  # fmt: skip


def crash_loop_story(rollout_id: str, gen: int) -> list[tuple[str, dict[str, Any]]]:
    """What an agent writes for the rollout's generation that crash-loops: it stores the
    revision, applies it, rolls it back, and its rollback target (generation 5) is healthy
    again."""
    return [
        ("desired", {"generation": gen, "source": "hub", "rollout_id": rollout_id,
                     "bundle_ref": NEW, "content_hash": None}),
        dep(gen, NEW, "applying"),
        dep(gen, NEW, "rolled_back", WHY),
        dep(5, OLD, "healthy"),
    ]  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "hub.db")
    yield s
    s.close()


def status(fleet: Fleet, rollout_id: str) -> dict[str, Any]:
    return fleet.call("rollouts.get", {"id": rollout_id})


def test_the_rollback_finishing_before_the_next_tick_still_fails_the_device(
    store: Store,
) -> None:
    fleet = Fleet(store, 1)
    for d in fleet.ids:  # the device ran 1.2.0 (generation 5) before the rollout
        fleet.send(d, [dep(5, OLD, "applying"), dep(5, OLD, "healthy")])
    r = fleet.rollout()
    engine.tick(store)  # writes the phase
    fleet.send("dev-00", crash_loop_story(r["id"], 9))  # all of it before the next tick
    engine.tick(store)
    got = status(fleet, r["id"])
    assert got["devices"][0]["state"] == "Failed", got
    assert got["devices"][0]["reason"] == f"rolled back: {WHY}"
    assert got["state"] in ("paused", "failed") and got["reason"]
    # Nothing is kept once the device is final.
    assert not store.scalar("SELECT count(*) FROM rollout_deployments")


def test_a_local_overrides_row_under_the_rollouts_generation_is_not_its_verdict(
    store: Store,
) -> None:
    """A local override may take the very generation the hub gives the rollout's revision;
    its rows (source local) say nothing about the rollout."""
    fleet = Fleet(store, 1)
    r = fleet.rollout()
    engine.tick(store)
    fleet.send("dev-00", [dep(9, NEW, "healthy", source="local")])
    engine.tick(store)
    assert status(fleet, r["id"])["devices"][0]["state"] == "Pending"
    fleet.send("dev-00", crash_loop_story(r["id"], 9)[:2])
    engine.tick(store)
    assert status(fleet, r["id"])["devices"][0]["state"] == "Updating"
    fleet.send("dev-00", [dep(9, NEW, "healthy", source="local")])
    engine.tick(store)
    assert status(fleet, r["id"])["devices"][0]["state"] == "Updating"


ROLLOUTS = 50


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_crash_looping_rollouts_all_end_with_the_agents_reason(seed: int) -> None:
    """50 rollouts of a crash-looping version, one device each, every device's rows split
    into batches at random points with controller ticks at random moments between them
    (the rollback often finishes before the next tick): every rollout ends failed or
    paused, every device Failed with the agent's reason, none stuck."""
    rng = random.Random(seed)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sb-verdicts-") as tmp:
        store = Store.open(Path(tmp) / "hub.db")
        try:
            fleet = Fleet(store, ROLLOUTS)
            ids = []
            for d in fleet.ids:
                out = fleet.call("rollouts.start", {"bundle": NEW, "target": f"device:{d}"})
                assert not is_error(out), out
                ids.append(out["id"])
            engine.tick(store)
            stories = {
                d: crash_loop_story(rid, 100 + i)
                for i, (d, rid) in enumerate(zip(fleet.ids, ids, strict=True))
            }
            while any(stories.values()):
                d = rng.choice([d for d, rows in stories.items() if rows])
                n = rng.randint(1, len(stories[d]))
                fleet.send(d, stories[d][:n])
                stories[d] = stories[d][n:]
                if rng.random() < 0.3:
                    engine.tick(store)
            engine.tick(store)
            stuck = []
            for rid in ids:
                got = status(fleet, rid)
                dev = got["devices"][0]
                if (
                    got["state"] not in ("paused", "failed")
                    or dev["reason"] != f"rolled back: {WHY}"
                ):
                    stuck.append((rid, got["state"], dev["state"], dev["reason"]))
            assert stuck == [], stuck
        finally:
            store.close()
