"""Property: whatever sequence of operator writes happens, each device's event log agrees
with its resolved desired bundle (the last `desired.changed` event names the current one),
and the writes ask the desired writer to re-resolve exactly the devices whose resolution
changed (plus, for a group membership change, the member: its group's variables, windows and
budget are in its document). Those requests stay on the hub's bus: no handler returns a
``desired`` notice itself (the writer publishes it for what it puts; test_hub_api)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.api.dispatch import dispatch
from hub.bus import DESIRED_STALE
from hub.store import Store

DEVICES = ["d1", "d2", "d3"]
GROUPS = ["g1", "g2"]
TAGS = ["t1", "t2"]
VERSIONS = ["1.0.0", "2.0.0"]
TARGETS = (
    [f"device:{d}" for d in DEVICES] + [f"group:{g}" for g in GROUPS] + [f"tag:{t}" for t in TAGS]
)


def spec(version: str) -> dict[str, Any]:
    return {
        "bundle": "app",
        "version": version,
        "containers": [{"name": "web", "image": "registry.local/web:1.0"}],
    }


ops = st.one_of(
    st.tuples(st.just("assign"), st.sampled_from(TARGETS), st.sampled_from(VERSIONS)),
    st.tuples(st.just("unassign"), st.sampled_from(TARGETS), st.none()),
    st.tuples(
        st.sampled_from(["devices.tag", "devices.untag"]),
        st.sampled_from(DEVICES),
        st.sampled_from(TAGS),
    ),
    st.tuples(
        st.sampled_from(["groups.add", "groups.remove"]),
        st.sampled_from(DEVICES),
        st.sampled_from(GROUPS),
    ),
    st.tuples(st.just("devices.decommission"), st.sampled_from(DEVICES), st.none()),
)


def body_for(op: tuple[str, str, str | None]) -> tuple[str, dict[str, Any]]:
    verb, a, b = op
    if verb == "assign":
        return verb, {"target": a, "bundle": f"app@{b}"}
    if verb == "unassign":
        return verb, {"target": a}
    if verb.startswith("devices.") and verb != "devices.decommission":
        return verb, {"id": a, "tag": b}
    if verb.startswith("groups."):
        return verb, {"name": b, "device": a}
    return verb, {"id": a}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=25))
def test_event_log_matches_resolution(sequence: list[tuple[str, str, str | None]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "hub.db")
        try:
            _, key = store.create_api_key("admin", "admin")
            for d in DEVICES:
                store.upsert_device(d, "acme")
            for g in GROUPS:
                store.create_group(g)
            for v in VERSIONS:
                reply = dispatch(store, "bundles.push", json.dumps({"spec": spec(v)}).encode(), key)
                assert "error" not in reply.body, reply.body
            for op in sequence:
                before = {d: (a.ref if a else None) for d, a in store.resolve_desired().items()}
                verb, body = body_for(op)
                reply = dispatch(store, verb, json.dumps(body).encode(), key)
                after = {d: (a.ref if a else None) for d, a in store.resolve_desired().items()}
                changed = sorted(d for d in DEVICES if before[d] != after[d])
                desired = [c for c in reply.changes if c.kind == "desired"]
                assert all((c.kind, c.action) == DESIRED_STALE for c in desired), desired
                requested = [c.data["devices"] for c in desired]
                assert len(requested) <= 1, desired
                got = requested[0] if requested else []
                if op[0] in ("groups.add", "groups.remove") and "error" not in reply.body:
                    # A membership change re-sends the member's document even when its bundle
                    # stays: the group's variables, windows and budget are in it.
                    assert set(got) - set(changed) <= {op[1]}, (op, reply.body)
                    got = [d for d in got if d in changed]
                assert got == changed, (op, reply.body)
            for d in DEVICES:
                current = store.resolve_desired([d])[d]
                events, _ = store.list_events(device=d, limit=1000)
                last = next((e for e in events if e["kind"] == "desired.changed"), None)
                assert (last["data"]["to"] if last else None) == (current.ref if current else None)
        finally:
            store.close()
