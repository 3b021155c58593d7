"""protocol.reported: the row kinds round-trip through the wire and the agent's outbox, and the
one reader of the reported-state document never raises, whatever a device sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.store import Store
from hub.sync.rows import reported_part
from protocol.report import ReportBatch, ReportRow, decode_report
from protocol.reported import (
    REPORTED_PARTS,
    DeploymentPart,
    GatePart,
    ReconcilePart,
    ReportedState,
    RowKind,
)

WIRE_KINDS = [
    "event",
    "metrics.1m",
    "observed",
    "desired",
    "deployment",
    "reconcile",
    "gate",
    "oversized",
]


def test_the_kinds_are_the_wire_names() -> None:
    assert [k.value for k in RowKind] == WIRE_KINDS
    for name in WIRE_KINDS:
        kind = RowKind(name)
        assert kind == name and str(kind) == name and f"{kind}" == name
        assert json.dumps({"kind": kind}) == json.dumps({"kind": name})
        assert RowKind.of(name) is kind
    assert RowKind.of("telemetry.v2") is None  # a newer agent's kind: only the seq advances
    assert RowKind.of(None) is None
    assert set(REPORTED_PARTS) == {"observed", "desired", "deployment", "reconcile", "gate"}


@pytest.mark.parametrize("kind", list(RowKind))
def test_a_kind_survives_a_report_batch(kind: RowKind) -> None:
    batch = ReportBatch("dev-1", (ReportRow(1, kind, 1.7e9, {"x": 1}),))
    row = decode_report(batch.to_json()).rows[0]
    assert row.kind == kind.value and RowKind.of(row.kind) is kind


def test_the_agent_outbox_writes_the_wire_names(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "agent.db", device_id="dev-1")
    try:
        store.event("test.kind", "hello")
        store.save_observed([{"name": "web", "state": "running"}])
        kinds = [r.kind for r in store.outbox_pending()]
    finally:
        store.close()
    assert kinds == ["event", "observed"]
    assert all(type(k) is str for k in kinds)


def test_what_the_hub_writes_is_what_the_reader_reads() -> None:
    doc: dict[str, Any] = {}
    dep = {
        "generation": 7, "source": "hub", "spec_hash": "h", "bundle_ref": "web@1.2.0",
        "status": "healthy", "reason": None, "started_at": 1.7e9, "finished_at": 1.7e9 + 5,
    }  # fmt: skip
    reported_part(doc, RowKind.DEPLOYMENT, ReportRow(3, "deployment", 1.7e9, dep))
    observed = {"containers": [{"name": "web", "state": "running"}, "junk"], "ts": 1.7e9}
    reported_part(doc, RowKind.OBSERVED, ReportRow(4, "observed", 1.7e9, observed))
    s = ReportedState.read(doc)
    assert s.deployment is not None and s.deployment.generation == 7
    assert (s.deployment.status, s.deployment.bundle_ref, s.deployment.hub_revision) == (
        "healthy",
        "web@1.2.0",
        True,
    )
    assert s.running is not None and s.running.bundle_ref == "web@1.2.0"
    assert s.running.as_of == s.deployment.as_of is not None
    assert s.containers == ({"name": "web", "state": "running"},)
    assert s.observed_as_of is not None
    assert s.stated_ref() == "web@1.2.0" and s.newest_generation() == 7


def test_missing_and_wrong_typed_keys_read_as_absent() -> None:
    assert ReportedState.read(None) == ReportedState()
    assert ReportedState.read([1, 2]) == ReportedState()
    s = ReportedState.read(
        {
            "deployment": {"generation": True, "status": 5, "bundle_ref": "", "reason": ["x"]},
            "desired": "nope",
            "observed": {"containers": {"web": {}}},
            "reconcile": {"result": "failed", "steps": "3", "finished_at": float("nan")},
            "generation": "9",
            "extra": {"anything": 1},
        }
    )
    assert s.deployment == DeploymentPart()
    assert s.desired is None and s.containers is None
    assert s.reconcile == ReconcilePart(result="failed")
    assert s.generation is None and s.newest_generation() is None
    # A flat shape: the fallbacks an older or foreign writer used.
    flat = ReportedState.read({"bundle": "web", "version": "2", "containers": [{"name": "a"}]})
    assert flat.flat_ref() == "web@2" and flat.containers == ({"name": "a"},)
    assert ReportedState.read({"last_reconcile": {"result": "failed"}}).reconcile == ReconcilePart(
        result="failed"
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)
part_keys = st.sampled_from(
    ["deployment", "desired", "observed", "running", "reconcile", "last_reconcile", "containers",
     "generation", "bundle_ref", "bundle", "version", "last_result", "as_of", "status",
     "bundle_ref", "reason", "source", "rollout_id", "result", "steps", "started_at"]
)  # fmt: skip
documents = st.recursive(
    json_values,
    lambda inner: st.dictionaries(part_keys | st.text(max_size=6), inner, max_size=8),
    max_leaves=30,
)


@given(documents)
def test_the_reader_never_raises_and_types_what_it_returns(doc: Any) -> None:
    s = ReportedState.read(doc)
    for v in (s.bundle_ref, s.bundle, s.version, s.last_result, s.observed_as_of):
        assert v is None or (isinstance(v, str) and v)
    assert s.generation is None or type(s.generation) is int
    assert s.containers is None or all(isinstance(c, dict) for c in s.containers)
    if s.deployment is not None:
        d = s.deployment
        assert d.generation is None or type(d.generation) is int
        assert d.status is None or isinstance(d.status, str)
        assert d.started_at is None or isinstance(d.started_at, float)
    ref = s.stated_ref() or s.flat_ref()
    assert ref is None or isinstance(ref, str)
    gen = s.newest_generation()
    assert gen is None or type(gen) is int


def test_the_gate_part() -> None:
    doc: dict[str, Any] = {}
    gate = {"state": "deferred", "generation": 4, "bundle_ref": "web@2", "kind": "lock",
            "reason": "held by ops", "until": None, "locks": [{"who": "ops"}, 3], "ts": 1.7e9}  # fmt: skip
    reported_part(doc, RowKind.GATE, ReportRow(9, "gate", 1.7e9, gate))
    part = ReportedState.read(doc).gate
    assert part is not None and part.deferred and part.generation == 4
    assert (part.kind, part.reason, part.until) == ("lock", "held by ops", None)
    assert part.locks == ({"who": "ops"},) and part.as_of is not None
    assert ReportedState.read({"gate": {"state": "clear"}}).gate == GatePart(state="clear")
