"""Which desired revision a device runs (``agent.precedence``), and that the device runs it.

Tables for the pure rule; a collision example (a local override, then the hub's next
revision with the very same generation); and a hypothesis state machine over the real
SQLite store, the real reconcile loop and the in-memory engine: any interleaving of hub
puts, other devices' puts (which move the hub's revision counter), local applies, clears,
agent restarts and link cuts ends with the device running exactly the revision the rule
names, reporting that revision, and never a deployment row that pairs a revision with
another revision's spec.

``SB_PRECEDENCE_EXAMPLES`` raises the number of examples for a long run (the suite keeps
it small).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from agent.precedence import Revision, Stored, effective, revision_of, spec_hash
from agent.reconcile.executor import ExecutorOptions
from agent.reconcile.loop import LoopOptions, ReconcileLoop
from agent.runtime.memory import MemoryEngine
from agent.store import Store
from bundles.model import BundleSpec, ContainerSpec, UpdatePolicy
from protocol.desired import DesiredState

DEV = "dev-prec"
MB = 1_000_000
IMAGES = ("reg/web:1", "reg/web:2", "reg/web:3")


def spec(n: int | None) -> dict[str, Any] | None:
    """Spec ``n`` of a small pool (None: "run no bundle")."""
    if n is None:
        return None
    return BundleSpec(
        "app",
        f"{n}.0.0",
        (ContainerSpec("web", IMAGES[n - 1], network_mode="host"),),
        update=UpdatePolicy(health_window=30.0),
    ).to_dict()


# -- the pure rule -------------------------------------------------------------------------
def test_effective_table() -> None:
    h5 = Stored(1, "hub", 5)
    loc = Stored(2, "local", 6)
    h7 = Stored(3, "hub", 7)  # arrived after the override, above every hub generation
    h4_late = Stored(3, "hub", 4)  # arrived after the override: a replay of an older one
    h6_same = Stored(3, "hub", 6)  # the hub's next revision took the override's number
    loc_cleared = Stored(2, "local", 6, cleared=True)
    loc2 = Stored(4, "local", 8)
    assert effective([]) is None
    assert effective([h5]) == h5
    assert effective([h5, h7, Stored(4, "hub", 6)]) == h7  # highest generation, not latest
    assert effective([h5, loc]) == loc  # an override wins...
    assert effective([h5, loc_cleared]) == h5  # ...until cleared by --clear,
    assert effective([h5, loc, h7]) == h7  # or by a newer hub revision arriving after it,
    assert effective([h5, loc, h6_same]) == h6_same  # even one with the override's number;
    assert effective([h5, loc, h4_late]) == loc  # a replay of an older one clears nothing
    assert effective([h5, loc, h7, loc2]) == loc2  # an override after that wins again
    assert effective([loc]) == loc
    assert effective([loc, Stored(3, "hub", 1)]) == Stored(3, "hub", 1)  # the first hub one


def test_a_revision_is_source_generation_and_spec() -> None:
    a = revision_of(DesiredState(6, spec(1), "local"))
    assert a == Revision("local", 6, spec_hash(spec(1)))
    assert a != revision_of(DesiredState(6, spec(1), "hub"))
    assert a != revision_of(DesiredState(6, spec(2), "local"))
    assert spec_hash(None) != spec_hash({})
    assert a.key.startswith("local:6:")


# -- the device ----------------------------------------------------------------------------
def options() -> LoopOptions:
    return LoopOptions(min_uptime=0.0, executor=ExecutorOptions(retries=0, backoff=0.0))


def new_engine() -> MemoryEngine:
    return MemoryEngine(DEV, registry=dict.fromkeys(IMAGES, MB))


async def settle(loop: ReconcileLoop, rounds: int = 8) -> None:
    for _ in range(rounds):
        await loop.reconcile_once("test")
        await loop.health_tick()
        if not loop.gate_open and loop.last_result and loop.last_result.outcome != "waiting":
            break


def running(engine: MemoryEngine) -> list[tuple[str, str | None]]:
    return sorted(
        (c.image, c.labels.get("io.signalbeam.version"))
        for c in engine.containers.values()
        if c.state == "running"
    )


def expected_running(doc: dict[str, Any] | None) -> list[tuple[str, str | None]]:
    if doc is None:
        return []
    return sorted((c["image"], doc["version"]) for c in doc["containers"])


async def test_hub_revision_with_the_overrides_generation_runs(tmp_path: Path) -> None:
    """The reported sequence: a local apply takes newest + 1, the hub's next revision for
    the device carries that same number; the hub's bundle runs and is reported."""
    store = Store.open(tmp_path / "agent.db", device_id=DEV)
    engine = new_engine()
    loop = ReconcileLoop(engine, store, store.current_desired, DEV, options())
    try:
        store.put_desired(DesiredState(4, spec(1)))
        await settle(loop)
        local = store.put_local_desired(spec(2))
        assert local.generation == 5
        await settle(loop)
        assert running(engine) == expected_running(spec(2))
        store.put_desired(DesiredState(5, spec(3)))  # the hub's next revision: also 5
        await settle(loop)
        assert running(engine) == expected_running(spec(3))
        latest = store.latest_deployment()
        assert latest is not None and latest.status == "healthy"
        assert latest.revision == revision_of(DesiredState(5, spec(3)))
        summary = store.status_summary()["deployment"]
        assert (summary["generation"], summary["bundle_ref"]) == (5, "app@3.0.0")
        # The override's own deployment is untouched and still its own.
        mine = store.deployment(revision_of(local))
        assert mine is not None and mine.status == "healthy" and mine.bundle_ref == "app@2.0.0"
    finally:
        store.close()


async def test_clearing_an_override_reports_the_hub_revision_again(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "agent.db", device_id=DEV)
    engine = new_engine()
    loop = ReconcileLoop(engine, store, store.current_desired, DEV, options())
    try:
        store.put_desired(DesiredState(3, spec(1)))
        await settle(loop)
        store.put_local_desired(spec(2))
        await settle(loop)
        store.clear_local_desired()
        await settle(loop)
        assert running(engine) == expected_running(spec(1))
        latest = store.latest_deployment()
        assert latest is not None and latest.status == "healthy"
        assert latest.revision == revision_of(DesiredState(3, spec(1)))
    finally:
        store.close()


EXAMPLES = int(os.environ.get("SB_PRECEDENCE_EXAMPLES", "40"))


class Device(RuleBasedStateMachine):
    """The model is written here, independently of ``agent.precedence``: an override holds
    until cleared or until a hub revision newer than any the device has arrives; otherwise
    the newest hub revision the device has received runs."""

    def __init__(self) -> None:
        super().__init__()
        self.work = Path(tempfile.mkdtemp(prefix="sb-prec-"))
        self.aio = asyncio.new_event_loop()
        self.engine = new_engine()
        self.store = Store.open(self.work / "agent.db", device_id=DEV)
        self.loop = self._new_loop()
        # The hub: one revision counter for the whole bucket; this device's newest entry.
        self.kv_revision = 0
        self.hub_entry: tuple[int, int | None] | None = None
        self.hub_specs: dict[int, int | None] = {}  # revision -> spec number, as put
        # The device, as the model sees it.
        self.link_up = True
        self.hub_seen = 0  # the newest hub revision delivered
        self.hub_top: int | None = None
        self.local: tuple[int, int | None] | None = None  # (generation, spec) in force
        self.local_specs: dict[int, int | None] = {}

    def _new_loop(self) -> ReconcileLoop:
        return ReconcileLoop(self.engine, self.store, self.store.current_desired, DEV, options())

    def teardown(self) -> None:
        try:
            self._settle_and_check()
        finally:
            self.store.close()
            self.aio.close()
            shutil.rmtree(self.work, ignore_errors=True)

    @initialize()
    def start(self) -> None:
        self._settle_and_check()

    # -- what happens to the device --------------------------------------------------------
    def _deliver(self) -> None:
        """The downlink: the newest entry of the device's key, if newer than the last."""
        if not self.link_up or self.hub_entry is None or self.hub_entry[0] <= self.hub_seen:
            return
        rev, n = self.hub_entry
        stored = self.store.put_desired(DesiredState(rev, spec(n), "hub"))
        assert stored
        if rev in self.local_specs:
            event("a hub revision took a local override's generation")
        self.hub_seen = rev
        if self.hub_top is None or rev > self.hub_top:
            self.hub_top = rev
            self.local = None  # the operator has spoken again: the override is cleared

    @rule(n=st.sampled_from([1, 2, 3, None]))
    def hub_put(self, n: int | None) -> None:
        self.kv_revision += 1
        self.hub_entry = (self.kv_revision, n)
        self.hub_specs[self.kv_revision] = n
        self._deliver()

    @rule(n=st.sampled_from([1, 2, 3, None]))
    def hub_put_with_the_overrides_number(self, n: int | None) -> None:
        """The field report's sequence: other devices' puts brought the bucket's counter
        to just below the override's generation, so the hub's next revision for this
        device carries that very number. The device ran the override for a while first."""
        self._settle_and_check()
        if self.local is not None and self.kv_revision < self.local[0]:
            self.kv_revision = self.local[0] - 1
        self.hub_put(n)

    @rule(count=st.integers(1, 2))
    def other_devices_put(self, count: int) -> None:
        self.kv_revision += count

    @rule(n=st.sampled_from([1, 2, 3, None]))
    def local_apply(self, n: int | None) -> None:
        d = self.store.put_local_desired(spec(n))
        self.local = (d.generation, n)
        self.local_specs[d.generation] = n

    @rule()
    def clear(self) -> None:
        self.store.clear_local_desired()
        self.local = None

    @rule()
    def cut_link(self) -> None:
        self.link_up = False

    @rule()
    def restore_link(self) -> None:
        self.link_up = True
        self._deliver()

    @rule()
    def restart_agent(self) -> None:
        self.store.close()
        self.store = Store.open(self.work / "agent.db", device_id=DEV)
        self.loop = self._new_loop()

    @rule()
    def reconcile(self) -> None:
        self._settle_and_check()

    # -- what must hold --------------------------------------------------------------------
    def _expected(self) -> tuple[Revision, int | None] | None:
        if self.local is not None:
            gen, n = self.local
            return Revision("local", gen, spec_hash(spec(n))), n
        if self.hub_top is not None:
            n = self.hub_specs[self.hub_top]
            return Revision("hub", self.hub_top, spec_hash(spec(n))), n
        return None

    def _settle_and_check(self) -> None:
        self.aio.run_until_complete(settle(self.loop))
        want = self._expected()
        if want is None:
            # No revision in force (an override cleared before the hub ever answered): the
            # rule names nothing, and the loop leaves what runs alone until one arrives.
            return
        rev, n = want
        assert running(self.engine) == expected_running(spec(n)), (rev, running(self.engine))
        latest = self.store.latest_deployment()
        assert latest is not None and latest.revision == rev and latest.status == "healthy", (
            rev,
            latest,
        )
        reported = self.store.status_summary()["deployment"]
        assert (reported["generation"], reported["status"]) == (rev.generation, "healthy")

    @invariant()
    def no_row_pairs_a_revision_with_another_spec(self) -> None:
        """Every deployment row the device reported names its own revision's spec."""
        for row in self.store.outbox_pending(100_000, 1 << 40):
            if row.kind != "deployment":
                continue
            p = row.payload
            specs = self.hub_specs if p["source"] == "hub" else self.local_specs
            assert p["generation"] in specs, p
            assert p["spec_hash"] == spec_hash(spec(specs[p["generation"]])), p


Device.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestDevicePrecedence = Device.TestCase
