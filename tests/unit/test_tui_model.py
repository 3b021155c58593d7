"""The TUI's pure view rules: ages, device rows, the summary, the filter, rollout progress."""

from __future__ import annotations

from typing import Any

import pytest

from tui.client import ApiError
from tui.screens import model
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


def device(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "d1", "status": "online", "tags": ["rpi", "lab"], "groups": []}
    return {**base, **fields}


def test_device_row_states() -> None:
    desired = {"bundle": "wm", "version": "1.3.0", "via": "tag:rpi"}
    running = reported(bundle_ref="wm@1.3.0", containers=[{"name": "a", "state": "running"}])
    row = model.device_row(device(desired=desired, reported=running, last_seen=iso(NOW - 30)), NOW)
    assert row.cells() == (
        "d1",
        "online 29s ago",
        "rpi,lab",
        "-",
        "wm@1.3.0",
        "wm@1.3.0",
        "healthy",
    )
    assert row.state == "online"
    old = reported(bundle_ref="wm@1.2.0")
    assert model.device_row(device(desired=desired, reported=old), NOW).state == "updating"
    # offline devices are not "updating": they cannot be until they come back
    assert model.device_row(device(status="offline", desired=desired), NOW).state == "offline"
    # nothing desired: running something is not an update in progress
    assert model.device_row(device(reported=old), NOW).state == "online"
    bad = reported(bundle_ref="wm@1.3.0", containers=[{"name": "a", "state": "exited"}])
    assert model.device_row(device(desired=desired, reported=bad), NOW).state == "failed"
    never = model.device_row({"id": "d2", "status": "unknown"}, NOW)
    assert never.cells()[1] == "unknown" and never.tags == "-" and never.desired == "-"


def test_summary() -> None:
    desired = {"bundle": "wm", "version": "1.3.0"}
    rows = [
        model.device_row(device(id="a"), NOW),
        model.device_row(device(id="b", desired=desired), NOW),
        model.device_row(device(id="c", status="offline"), NOW),
        model.device_row(
            device(id="d", reported=reported(containers=[{"name": "x", "health": "unhealthy"}])),
            NOW,
        ),
    ]
    counts = model.summarize(rows)
    assert counts == {"total": 4, "online": 3, "offline": 1, "updating": 1, "failed": 1}
    text = model.summary_text(counts)
    assert text == "4 devices │ online 3 │ offline 1 │ updating 1 │ failed 1"
    assert model.summary_text(counts, 1, more=True).endswith(" │ page 1 (] next)")
    assert model.summary_text(counts, 3, more=True).endswith(" │ page 3 ([ prev ] next)")
    assert model.summary_text(counts, 2).endswith(" │ page 2 ([ prev)")


def test_filter_parsing_and_request_body() -> None:
    f = model.parse_filter("tag:lab group:north status:online host 7")
    assert f.body() == {"tag": "lab", "group": "north", "status": "online", "text": "host 7"}
    assert model.parse_filter("").body() == {}
    assert model.parse_filter("status:decommissioned").body() == {
        "status": "decommissioned",
        "include_decommissioned": True,
    }
    derived = model.parse_filter("status:updating")
    assert derived.body() == {}  # the hub has no such status; the TUI filters rows
    rows = [
        model.device_row(device(id="a"), NOW),
        model.device_row(device(id="b", desired={"bundle": "wm", "version": "1"}), NOW),
    ]
    assert [r.id for r in rows if derived.keeps(r)] == ["b"]
    with pytest.raises(model.FilterError, match="unknown status 'sideways'"):
        model.parse_filter("status:sideways")
    with pytest.raises(model.FilterError, match="needs a value"):
        model.parse_filter("tag:")


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
