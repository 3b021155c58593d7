"""The operator-API additions the TUI reads: ``session.whoami``, the ``devices.list``
summary view, dry runs, and the coalesced device notices. On a real SQLite file through
``dispatch`` (no NATS); the pure parts directly."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundles.validate import load_file
from hub import __version__
from hub.api import summary as sv
from hub.api.dispatch import dispatch
from hub.api.handlers import HANDLERS
from hub.api.notices import DeviceNotices, IdCoalescer
from hub.rollouts.api import VERBS as ROLLOUT_VERBS
from hub.store import Store
from protocol.api import MAX_LIST_IDS, MAX_SUMMARY_LIMIT
from protocol.errors import is_error

EXAMPLES = Path(__file__).resolve().parents[2] / "bundles" / "examples" / "warehouse-monitor"


class Env:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.admin_rec, self.admin = store.create_api_key("admin", "admin")
        self.ro_rec, self.ro = store.create_api_key("viewer", "readonly")

    def call(self, verb: str, body: Any = None, key: str = "admin") -> dict[str, Any]:
        k = {"admin": self.admin, "ro": self.ro}[key]
        raw = json.dumps(body or {}).encode()
        return dispatch(self.store, verb, raw, k, {**HANDLERS, **ROLLOUT_VERBS}).body


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    store = Store.open(tmp_path / "hub.db")
    yield Env(store)
    store.close()


@pytest.mark.parametrize("key", ["admin", "ro"])
def test_whoami_names_the_key_and_its_role(env: Env, key: str) -> None:
    rec = env.admin_rec if key == "admin" else env.ro_rec
    body = env.call("session.whoami", key=key)
    assert body == {
        "key_id": rec["id"],
        "name": rec["name"],
        "role": "admin" if key == "admin" else "readonly",
        "hub_version": __version__,
    }


def test_whoami_refuses_body_fields(env: Env) -> None:
    body = env.call("session.whoami", {"x": 1})
    assert is_error(body) and body["error"]["field"] == "x"


# --- pure parts --------------------------------------------------------------------------
HEALTHY = {
    "deployment": {"status": "healthy", "bundle_ref": "wm@1.3.0", "reason": ""},
    "running": {"bundle_ref": "wm@1.3.0", "generation": 4},
    "observed": {
        "containers": [
            {"name": "a", "state": "running", "health": "healthy"},
            {"name": "b", "state": "running", "health": "unhealthy"},
            {"name": "c", "state": "exited"},
            {"name": "d", "state": "restarting"},
            "junk",
        ]
    },
}


@pytest.mark.parametrize(
    ("state", "want"),
    [
        (None, None),
        ("text", None),
        ({}, None),
        ({"bundle_ref": "x@1.0.0"}, "x@1.0.0"),
        (HEALTHY, "wm@1.3.0"),
        ({"deployment": {"status": "applying", "bundle_ref": "wm@2.0.0"}}, "wm@2.0.0"),
        # A failed update: the hub's record of the last healthy deployment still runs.
        (
            {
                "deployment": {"status": "rolled_back", "bundle_ref": "wm@2.0.0"},
                "running": {"bundle_ref": "wm@1.3.0"},
            },
            "wm@1.3.0",
        ),
        ({"deployment": {"status": "failed", "bundle_ref": "wm@2.0.0"}}, None),
        ({"bundle": "wm", "version": "1.0.0"}, "wm@1.0.0"),
        ({"bundle": "wm"}, "wm"),
        ({"bundle_ref": 5, "deployment": [1]}, None),
    ],
)
def test_running_ref(state: Any, want: str | None) -> None:
    assert sv.running_ref(state) == want


def test_runs_matches_name_or_exact_ref() -> None:
    assert sv.runs(HEALTHY, "wm") and sv.runs(HEALTHY, "wm@1.3.0")
    assert not sv.runs(HEALTHY, "wm@1.3.1") and not sv.runs(HEALTHY, "w")
    assert not sv.runs({}, "wm")


def test_deployment_and_containers() -> None:
    assert sv.deployment(HEALTHY) == {"status": "healthy", "error": None}
    failed = {"deployment": {"status": "failed", "reason": "pull failed"}}
    assert sv.deployment(failed) == {"status": "failed", "error": "pull failed"}
    assert sv.deployment({"deployment": {}}) is None and sv.deployment(None) is None
    assert sv.containers(HEALTHY) == {"total": 4, "bad": 3}
    assert sv.containers({"containers": []}) == {"total": 0, "bad": 0}
    assert sv.containers({"deployment": {}}) is None


def test_spark_window_is_clock_aligned_and_holds_now() -> None:
    start, end = sv.spark_window(1_000_123.4)
    assert end - start == 3600 and start % 300 == 0 and start <= 1_000_123.4 < end
    # Anywhere within the newest five minutes gives the same buckets.
    assert sv.spark_window(end - 300) == sv.spark_window(end - 1) == (start, end)


def test_sparks_bucket_means_nulls_and_last() -> None:
    buckets = [
        ("d1", "cpu.percent", 0, 30.0, 2),  # mean 15
        ("d1", "cpu.percent", 11, 90.0, 2),
        ("d1", "mem.percent", 1, 33.333, 1),
        ("d1", "load.1", 0, 1.0, 1),  # not a summary metric
        ("d1", "cpu.percent", 12, 99.0, 1),  # outside the window
        ("d2", "load.1", 0, 1.0, 1),
    ]
    last = [("d1", "cpu.percent", 50.0), ("d2", "load.1", 1.0)]
    out = sv.sparks(buckets, last)
    assert set(out) == {"d1"}
    assert out["d1"]["cpu"] == {"last": 50.0, "spark": [15.0, *[None] * 10, 45.0]}
    # No newest minute given: the newest bucket stands in.
    assert out["d1"]["mem"] == {"last": 33.3, "spark": [None, 33.3, *[None] * 10]}
    assert out["d1"]["disk"] is None


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.sampled_from(list(sv.SUMMARY_METRICS)),
            st.integers(-2, 13),
            st.floats(0, 100),
            st.integers(0, 5),
        ),
        max_size=50,
    )
)
def test_sparks_always_twelve_buckets_of_means(
    buckets: list[tuple[str, str, int, float, int]],
) -> None:
    for metrics in sv.sparks(buckets, []).values():
        for m in metrics.values():
            if m is None:
                continue
            assert len(m["spark"]) == sv.SPARK_BUCKETS
            assert m["last"] in m["spark"]
            assert any(x is not None for x in m["spark"])


# --- devices.list view summary through dispatch --------------------------------------------
def _spec(version: str) -> dict[str, Any]:
    return load_file(EXAMPLES / f"{version}.yaml").to_dict()


@pytest.fixture
def fleet(env: Env) -> Env:
    s = env.store
    for i in range(4):
        s.upsert_device(f"dev-{i}", "acme", tags=["lab"] if i < 2 else [])
    spec = _spec("1.3.0")
    assert not is_error(env.call("bundles.push", {"spec": spec}))
    ref = f"{spec['bundle']}@{spec['version']}"
    assert not is_error(env.call("assign", {"target": "tag:lab", "bundle": ref}))
    s.set_reported("dev-0", {**HEALTHY, "running": {"bundle_ref": ref}, "deployment": {
        "status": "healthy", "bundle_ref": ref}})  # fmt: skip
    s.set_reported("dev-1", {"deployment": {"status": "failed", "reason": "boom"}})
    now = int(time.time()) // 60 * 60
    s.put_metrics("1m", "dev-0", [("cpu.percent", now, 1, 12.5, 20)])
    s.put_metrics("1m", "dev-0", [("cpu.percent", now - 600, 1, 2.5, 20)])
    s.put_metrics("1m", "dev-0", [("cpu.percent", now - 7200, 1, 99, 99)])  # too old
    env.ref = ref  # type: ignore[attr-defined]
    return env


def test_summary_view_fields(fleet: Env) -> None:
    body = fleet.call("devices.list", {"view": "summary"}, key="ro")
    items = {d["id"]: d for d in body["items"]}
    ref: str = fleet.ref  # type: ignore[attr-defined]
    d0, d1, d2 = items["dev-0"], items["dev-1"], items["dev-2"]
    assert d0["desired"] == {"bundle": ref.split("@")[0], "version": "1.3.0", "via": "tag:lab"}
    assert d0["running"] == ref
    assert d0["deployment"] == {"status": "healthy", "error": None}
    assert d0["containers"] == {"total": 4, "bad": 3}
    assert d0["rollout"] is None
    cpu = d0["metrics"]["cpu"]
    assert cpu["last"] == 12.5 and len(cpu["spark"]) == 12 and cpu["spark"][-1] == 12.5
    assert 2.5 in cpu["spark"] and 99.0 not in cpu["spark"]
    assert d0["metrics"]["mem"] is None
    assert d1["deployment"] == {"status": "failed", "error": "boom"} and d1["running"] is None
    assert d2["desired"] is None and d2["running"] is None and d2["metrics"] is None
    assert d2["containers"] is None and d2["deployment"] is None
    # The plain list is unchanged.
    plain = fleet.call("devices.list")["items"][0]
    assert "metrics" not in plain and "running" not in plain


def test_summary_view_shows_the_active_rollout(fleet: Env) -> None:
    ref: str = fleet.ref  # type: ignore[attr-defined]
    started = fleet.call("rollouts.start", {"bundle": ref, "target": "device:dev-2"})
    assert not is_error(started), started
    items = {d["id"]: d for d in fleet.call("devices.list", {"view": "summary"})["items"]}
    assert items["dev-2"]["rollout"]["id"] == started["id"]
    assert items["dev-2"]["rollout"]["state"] == "Pending"
    assert isinstance(items["dev-2"]["rollout"]["reason"], str)
    fleet.call("rollouts.abort", {"id": started["id"]})
    items = {d["id"]: d for d in fleet.call("devices.list", {"view": "summary"})["items"]}
    assert items["dev-2"]["rollout"] is None


def test_running_filter_pages_exactly(fleet: Env) -> None:
    ref: str = fleet.ref  # type: ignore[attr-defined]
    name = ref.split("@")[0]
    for want in (name, ref):
        body = fleet.call("devices.list", {"running": want, "limit": 1})
        assert [d["id"] for d in body["items"]] == ["dev-0"] and body["next_cursor"] is None
    assert fleet.call("devices.list", {"running": f"{name}@9.9.9"})["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"view": "full"}, "view"),
        ({"view": "summary", "limit": MAX_SUMMARY_LIMIT + 1}, "limit"),
        ({"running": "Bad Name"}, "running"),
        ({"running": "wm@notaversion"}, "running"),
        ({"running": 5}, "running"),
        ({"ids": "dev-0"}, "ids"),
        ({"ids": [f"d-{i}" for i in range(MAX_LIST_IDS + 1)]}, "ids"),
        ({"ids": ["dev-0", 7]}, "ids[1]"),
        ({"ids": ["dev-0", "Not An Id"]}, "ids[1]"),
    ],
)
def test_summary_and_running_refuse_bad_values(env: Env, body: dict[str, Any], field: str) -> None:
    out = env.call("devices.list", body)
    assert is_error(out) and out["error"]["field"] == field, out


def test_ids_filter_keeps_exactly_those_devices(fleet: Env) -> None:
    body = {"view": "summary", "ids": ["dev-3", "dev-1", "dev-1", "nope"]}
    page = fleet.call("devices.list", body, key="ro")
    assert [d["id"] for d in page["items"]] == ["dev-1", "dev-3"] and page["next_cursor"] is None
    assert page["items"][0]["deployment"] == {"status": "failed", "error": "boom"}
    # ANDed with the other filters, and paged like any list
    assert [d["id"] for d in fleet.call("devices.list", {"ids": ["dev-0", "dev-3"], "tag": "lab"})[
        "items"]] == ["dev-0"]  # fmt: skip
    first = fleet.call("devices.list", {"ids": ["dev-0", "dev-2"], "limit": 1})
    assert [d["id"] for d in first["items"]] == ["dev-0"] and first["next_cursor"] == "dev-0"
    assert fleet.call("devices.list", {"ids": []})["items"] == []
    full = [f"dev-{i}" for i in range(MAX_LIST_IDS)]
    assert len(fleet.call("devices.list", {"ids": full, "view": "summary"})["items"]) == 4


def test_ids_filter_with_decommissioned(fleet: Env) -> None:
    assert not is_error(fleet.call("devices.decommission", {"id": "dev-2"}))
    assert fleet.call("devices.list", {"ids": ["dev-2"]})["items"] == []
    body = {"ids": ["dev-2"], "include_decommissioned": True, "view": "summary"}
    assert [d["decommissioned"] for d in fleet.call("devices.list", body)["items"]] == [True]


# --- coalesced devices/updated notices ---------------------------------------------------
def test_coalescer_dedups_and_overflows() -> None:
    c = IdCoalescer(limit=3)
    assert not c.pending
    c.add(["b", "a"])
    c.add(["a"])
    assert c.pending and c.take() == ["a", "b"] and not c.pending
    c.add(["1", "2", "3", "4"])
    c.add(["5"])
    assert c.take() is None  # too many in one window: "reload"
    c.add(["x"])
    assert c.take() == ["x"]  # the overflow does not stick


@given(st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=5), max_size=20))
def test_coalescer_take_is_the_union_or_none(batches: list[list[str]]) -> None:
    c = IdCoalescer(limit=5)
    for b in batches:
        c.add(b)
    union = sorted({i for b in batches for i in b})
    assert c.take() == (union if len(union) <= 5 else None)


async def test_device_notices_at_most_one_per_interval() -> None:
    sent: list[tuple[float, list[str] | None]] = []
    loop = asyncio.get_running_loop()

    async def send(ids: list[str] | None) -> None:
        sent.append((loop.time(), ids))

    n = DeviceNotices(send, interval=0.2, limit=500)
    n.changed(["d1"])  # quiet before: goes out at once
    await asyncio.sleep(0)
    n.changed(["d2", "d3"])
    n.changed(["d2"])
    n.changed([])
    deadline = loop.time() + 5
    while len(sent) < 2 and loop.time() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert [ids for _, ids in sent] == [["d1"], ["d2", "d3"]]
    assert sent[1][0] - sent[0][0] >= 0.19
    n.changed([f"d{i}" for i in range(501)])
    while len(sent) < 3 and loop.time() < deadline:
        await asyncio.sleep(0.02)
    assert sent[2][1] is None
    await n.stop()


# --- dry runs ----------------------------------------------------------------------------
DRY_TABLES = ("assignments", "events", "rollouts", "rollout_targets", "desired_published")


def _snapshot(store: Store) -> dict[str, list[Any]]:
    return {t: store.rows(f"SELECT * FROM {t} ORDER BY rowid") for t in DRY_TABLES}


@pytest.mark.parametrize("key", ["admin", "ro"])
def test_dry_runs_count_devices_and_write_nothing(fleet: Env, key: str) -> None:
    ref: str = fleet.ref  # type: ignore[attr-defined]
    for i in range(4, 30):
        fleet.store.upsert_device(f"dev-{i:02d}", "acme", tags=["many"])
    fleet.store.decommission_device("dev-29")
    before = _snapshot(fleet.store)
    out = fleet.call("assign", {"target": "tag:many", "bundle": ref, "dry_run": True}, key=key)
    assert out["dry_run"] is True and out["devices"] == 25, out
    assert out["sample"] == sorted(out["sample"]) and len(out["sample"]) == 20
    assert "dev-29" not in out["sample"]
    out = fleet.call(
        "rollouts.start", {"bundle": ref, "target": "tag:lab", "dry_run": True}, key=key
    )
    assert out == {"dry_run": True, "devices": 2, "sample": ["dev-0", "dev-1"]}
    assert _snapshot(fleet.store) == before
    # The real thing still works afterwards (the rehearsal left no transaction open).
    assert not is_error(fleet.call("rollouts.start", {"bundle": ref, "target": "tag:lab"}))


@pytest.mark.parametrize(
    ("verb", "body", "code", "field"),
    [
        ("assign", {"target": "group:nope", "bundle": "wm@1.0.0"}, "not_found", "bundle"),
        ("assign", {"target": "group:nope", "bundle": "REF"}, "not_found", "target"),
        ("assign", {"target": "planet:x", "bundle": "REF"}, "invalid", "target"),
        ("rollouts.start", {"target": "tag:none", "bundle": "REF"}, "invalid", "target"),
        (
            "rollouts.start",
            {"target": "tag:lab", "bundle": "REF", "canary_percent": 101},
            "invalid",
            "canary_percent",
        ),
    ],
)
def test_dry_runs_validate_like_the_real_write(
    fleet: Env, verb: str, body: dict[str, Any], code: str, field: str
) -> None:
    ref: str = fleet.ref  # type: ignore[attr-defined]
    body = {k: (ref if v == "REF" else v) for k, v in body.items()}
    before = _snapshot(fleet.store)
    out = fleet.call(verb, {**body, "dry_run": True}, key="ro")
    assert is_error(out) and out["error"]["code"] == code and out["error"]["field"] == field, out
    assert _snapshot(fleet.store) == before


@pytest.mark.parametrize("dry", [False, "yes", None])
def test_readonly_keys_may_only_dry_run(fleet: Env, dry: Any) -> None:
    ref: str = fleet.ref  # type: ignore[attr-defined]
    body: dict[str, Any] = {"target": "tag:lab", "bundle": ref}
    if dry is not None:
        body["dry_run"] = dry
    for verb in ("assign", "rollouts.start"):
        out = fleet.call(verb, body, key="ro")
        assert is_error(out) and out["error"]["code"] == "forbidden", out
    # Only the declared verbs know dry_run at all.
    out = fleet.call("unassign", {"target": "tag:lab", "dry_run": True}, key="ro")
    assert out["error"]["code"] == "forbidden"
    out = fleet.call("unassign", {"target": "tag:lab", "dry_run": True})
    assert out["error"]["code"] == "invalid" and out["error"]["field"] == "dry_run"
