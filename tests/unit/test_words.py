"""One word for one thing: plural wording, rollout phases counted from 1 everywhere, and
the hub's old `desired_changed` events renamed to the agent's `desired.changed`."""

from __future__ import annotations

from pathlib import Path

from hub.rollouts import machine as m
from hub.store import Store
from hub.store.migrations import migrate
from sbutil.text import phase_name, plural


def test_plural() -> None:
    assert [plural(n, "step") for n in (0, 1, 2)] == ["0 steps", "1 step", "2 steps"]
    assert plural(1, "device") == "1 device" and plural(3, "entry", "entries") == "3 entries"


def test_phases_are_counted_from_one_everywhere() -> None:
    assert phase_name(1) == "phase 1"
    assert m.device_state(m.Target("d", 1))[1] == "waiting for phase 1"  # beside PHASE 1
    assert set(m.plan_phases(["a", "b"], m.canary_phases(50)).values()) == {1, 2}


def test_old_desired_changed_events_take_the_one_name(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "hub.db")
    try:
        store.add_event(None, "desired_changed", "a -> b", {})  # as an older hub wrote it
        store.db.execute("DELETE FROM schema_migrations WHERE version = 9")
        assert migrate(store.db) == [9]
        kinds = [e["kind"] for e in store.list_events()[0]]
        assert kinds == ["desired.changed"]
    finally:
        store.close()


def test_the_demo_canary_sends_one_device_first_as_it_says() -> None:
    import importlib.util

    # The demo's rollout settings live beside its stack (deploy/dev/demo_stack.py).
    path = Path(__file__).resolve().parents[2] / "deploy" / "dev" / "demo_stack.py"
    spec = importlib.util.spec_from_file_location("sb_demo_stack", path)
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert m.canary_size(len(demo.DEVICES), demo.CANARY_PERCENT) == 1  # 34% made it two
