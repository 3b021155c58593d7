"""The TUI's pure view rules: ages, device rows, the summary, the filter, rollout progress."""

from __future__ import annotations

from typing import Any

import pytest

from tui.client import ApiError
from tui.models import common as model
from tui.widgets.assign import target_problem
from tui.widgets.rollouts import verb_missing

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def iso(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".250Z"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0s"),
        (0, "0s"),
        (59, "59s"),
        (60, "1m"),
        (3599, "59m"),
        (3600, "1h"),
        (86400 * 3, "3d"),
    ],
)
def test_age(seconds: float, text: str) -> None:
    assert model.age(seconds) == text


def test_parse_ts_and_ago() -> None:
    assert model.parse_ts(iso(NOW)) == NOW + 0.25
    assert model.parse_ts("not a time") is None and model.parse_ts(None) is None
    assert model.ago(iso(NOW - 300), NOW) == "4m ago"  # 299.75 s
    assert model.ago(None, NOW) == "never"


def reported(**state: Any) -> dict[str, Any]:
    return {"state": state, "as_of": iso(NOW)}


def test_running_ref_reads_either_shape() -> None:
    assert model.running_ref(reported(bundle_ref="wm@1.3.0")) == "wm@1.3.0"
    assert model.running_ref(reported(bundle="wm", version="1.2.0")) == "wm@1.2.0"
    assert model.running_ref(reported(bundle="app@1.0.0")) == "app@1.0.0"
    agent = {"status": "healthy", "bundle_ref": "wm@1.3.0"}
    assert model.running_ref(reported(deployment=agent)) == "wm@1.3.0"
    failed = {"status": "rolled_back", "bundle_ref": "wm@1.4.0"}
    assert model.running_ref(reported(deployment=failed)) is None
    assert model.running_ref(reported(bundle=None, containers=[])) is None
    assert model.running_ref(None) is None and model.running_ref({"state": "junk"}) is None


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({}, "-"),
        ({"containers": [{"name": "a", "state": "running", "health": "healthy"}]}, "healthy"),
        ({"containers": [{"name": "a", "state": "running", "health": None}]}, "healthy"),
        ({"containers": [{"name": "a", "state": "running", "health": "starting"}]}, "starting"),
        ({"containers": [{"name": "a", "state": "running", "health": "unhealthy"}]}, "unhealthy"),
        ({"containers": [{"name": "a", "state": "exited"}]}, "unhealthy"),
        ({"last_result": "failed", "containers": []}, "failed"),
        ({"deployment": {"status": "rolled_back", "reason": "unhealthy"}}, "failed"),
        ({"last_reconcile": {"result": "failed", "reason": "pull"}}, "failed"),
        ({"last_reconcile": {"result": "ok"}, "deployment": {"status": "healthy"}}, "-"),
        ({"containers": "junk"}, "-"),
    ],
)
def test_health(state: dict[str, Any], expected: str) -> None:
    assert model.health(reported(**state)) == expected


def test_problem_says_why() -> None:
    dep = {"status": "rolled_back", "bundle_ref": "wm@1.4.0", "reason": "unhealthy in 60s"}
    assert model.problem(reported(deployment=dep)) == "wm@1.4.0 rolled_back: unhealthy in 60s"
    last = {"result": "failed", "reason": "pull denied"}
    assert model.problem(reported(last_reconcile=last)) == "last reconcile failed: pull denied"
    assert model.problem(reported(containers=[])) is None and model.problem(None) is None


def test_rollout_progress_and_rows() -> None:
    rollout = {
        "id": "r1",
        "bundle": "wm",
        "version": "1.3.0",
        "state": "running",
        "counts": {"pending": 2, "Updating": 1, "succeeded": 3, "Failed": 1, "weird": 9},
        "devices": [
            {"device": "a", "state": "Failed", "reason": "unhealthy within 60s; rolled back"},
            {"device_id": "b", "state": "Succeeded"},
            "junk",
        ],
    }
    assert model.rollout_progress(rollout) == (4, 7)
    assert model.rollout_label(rollout) == (
        "r1  wm@1.3.0  [running]",
        "pending 2 · updating 1 · succeeded 3 · failed 1",
    )
    # pending devices their site holds (a lock, a window, an override) are counted apart
    assert model.rollout_label({**rollout, "deferred": 2})[1] == (
        "pending 2 · updating 1 · succeeded 3 · failed 1 (⏸ 2 deferred)"
    )
    assert model.rollout_devices(rollout) == [
        ("a", "Failed", "unhealthy within 60s; rolled back"),
        ("b", "Succeeded", ""),
    ]
    assert model.rollout_progress({"id": "r2"}) == (0, 0)


def test_assign_target_check() -> None:
    assert target_problem("group:lab") is None and target_problem("device:dev-1") is None
    assert target_problem("lab") and target_problem("zone:x") and target_problem("tag:")


def test_missing_verb_is_told_apart_from_a_missing_rollout() -> None:
    assert verb_missing(ApiError("not_found", "unknown API verb 'rollouts.list'", "verb"))
    assert not verb_missing(ApiError("not_found", "no rollout 'r9'", "id"))
    assert not verb_missing(ApiError("unavailable", "no hub is serving the API (no responders)"))


def test_containers_and_health_read_the_hubs_observed_snapshot() -> None:
    # The shape the hub's ingest keeps: the agent's last "observed" outbox row.
    reported = {
        "as_of": "2026-11-26T19:19:58.461Z",
        "state": {
            "deployment": {"status": "healthy", "bundle_ref": "wm@1.3.0"},
            "observed": {
                "containers": [
                    {
                        "name": "a",
                        "service": "temp-sensor",
                        "state": "running",
                        "health": "healthy",
                    },
                    {"name": "b", "service": "relay", "state": "running", "health": "healthy"},
                ]
            },
            "reconcile": {"result": "succeeded", "reason": None},
        },
    }
    assert [c["name"] for c in model.containers(reported)] == ["a", "b"]
    assert model.health(reported) == "healthy"
    failed = {"state": {"reconcile": {"result": "failed", "reason": "pull refused"}}}
    assert model.problem(failed) == "last reconcile failed: pull refused"
