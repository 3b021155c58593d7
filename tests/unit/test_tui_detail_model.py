"""The drill-down screens' pure rules: metric windows, container rows, the journal's "why
stuck", the live log tail merge and search, confirmation texts, read-only, state colours."""

from __future__ import annotations

from typing import Any

import pytest

from tui.models import confirm as cm
from tui.models import detail as dm
from tui.models import journal as jm
from tui.models.rollout_fields import FieldError

NOW = 1_800_000_000.0


def test_windows_cycle_and_pick_hourly_rollups_for_long_ranges() -> None:
    assert [w.key for w in dm.WINDOWS] == ["1h", "24h", "7d"]
    assert dm.next_window("1h").key == "24h" and dm.next_window("7d").key == "1h"
    assert dm.next_window("bogus").key == "1h"
    assert dm.metrics_request("d1", dm.window("1h"), NOW) == {
        "device": "d1", "resolution": "1m", "since": int(NOW) - 3600,
    }  # fmt: skip
    assert dm.metrics_request("d1", dm.window("7d"), NOW)["resolution"] == "1h"


def test_metric_series_sorts_by_time_and_tolerates_junk() -> None:
    items: list[Any] = [
        {"name": "cpu", "ts": 120, "avg": 2},
        {"name": "cpu", "ts": 60, "avg": 1.5},
        {"name": "mem", "ts": 60, "avg": None},
        {"ts": 60, "avg": 9},
        "junk",
    ]
    assert dm.metric_series(items) == {"cpu": [1.5, 2.0], "mem": [0.0]}
    assert dm.metric_label("cpu", [1.5, 2.0]) == "cpu  last 2.0  min 1.5  max 2.0"
    assert dm.metric_label("cpu", []) == "cpu  no data"


def test_container_rows_carry_restarts() -> None:
    reported = {
        "state": {
            "observed": {
                "containers": [
                    {"name": "web", "service": "web", "state": "running", "health": "healthy",
                     "restart_count": 3, "image": "nginx:1"},
                    {"name": "db", "state": "exited"},
                ]
            }
        }
    }  # fmt: skip
    assert dm.container_rows(reported) == [
        ("web", "web", "running", "healthy", "3", "-", "-", "nginx:1"),
        ("db", "-", "exited", "-", "-", "-", "-", "-"),
    ]
    # CPU% and memory: the newest minute of the agent's per-container samples
    series = {
        "cpu.percent": [10.0],
        "container.web.cpu_percent": [1.0, 2.5],
        "container.web.memory_bytes": [1024.0, 12.5 * 1024 * 1024],
    }
    usage = dm.container_usage(series)
    assert usage == {"web": ("2.5", "12.5 MiB")}
    assert dm.container_rows(reported, usage)[0][5:7] == ("2.5", "12.5 MiB")
    assert dm.host_first(series) == [
        "cpu.percent", "container.web.cpu_percent", "container.web.memory_bytes"
    ]  # fmt: skip
    assert dm.container_names(reported) == ["web", "db"]
    upgraded = {"state": {"observed": {"containers": [
        {"name": "sb-web-1a2b-9f8e", "service": "web"}, {"name": "sb-web-3c4d-9f8e", "service": "web"},
    ]}}}  # fmt: skip
    assert dm.container_names(upgraded) == ["web"]  # the service, once, across spec hashes
    assert dm.container_rows(None) == []


def device(**state: Any) -> dict[str, Any]:
    return {
        "id": "d1",
        "status": "online",
        "last_seen": "2027-01-15T08:00:00.000Z",
        "desired": {"bundle": "app", "version": "2.0.0", "via": "group:lab"},
        "desired_generation": 7,
        "reported": {"state": state, "as_of": "2027-01-15T08:00:00.000Z"},
    }


def test_journal_explains_a_rolled_back_deployment() -> None:
    d = device(
        desired={"bundle_ref": "app@2.0.0", "generation": 7, "source": "hub"},
        deployment={"bundle_ref": "app@2.0.0", "status": "rolled_back",
                    "reason": "web unhealthy after 60s", "started_at": NOW - 120,
                    "finished_at": NOW - 30},
        reconcile={"result": "failed", "trigger": "desired", "generation": 7, "steps": 4,
                   "reason": "health gate failed", "finished_at": NOW - 30},
    )  # fmt: skip
    lines = jm.journal_lines(d, NOW)
    assert lines[0] == "hub wants: app@2.0.0 (generation 7)"
    assert "device has: app@2.0.0 (generation 7, hub)" in lines
    assert "deployment: app@2.0.0 rolled_back — web unhealthy after 60s" in lines
    assert any(line.startswith("last reconcile: failed (trigger desired") for line in lines)
    assert "  reason: health gate failed" in lines
    assert "stuck: app@2.0.0 rolled_back: web unhealthy after 60s" in lines
    # the deployment already says why; the failed run is not repeated as a second cause
    assert not any("last reconcile failed" in line for line in lines)


def test_journal_for_a_converged_device_and_one_never_synced() -> None:
    ok = device(
        desired={"bundle_ref": "app@2.0.0", "generation": 7},
        deployment={"bundle_ref": "app@2.0.0", "status": "healthy"},
    )
    assert jm.journal_lines(ok, NOW)[-1] == "converged: nothing is holding the device back"
    never = {"id": "d2", "status": "offline", "last_seen": None, "reported": None}
    lines = jm.journal_lines(never, NOW)
    assert lines[0] == "hub wants: nothing assigned"
    assert "has reported nothing yet" in lines[1]
    assert lines[2].startswith("stuck: the device is offline (last seen never)")


def test_stuck_reasons() -> None:
    behind = device(desired={"bundle_ref": "app@1.0.0"}, deployment={"status": "healthy"})
    assert jm.stuck_reasons(behind, NOW) == [
        "the device has not received app@2.0.0 yet (it has app@1.0.0)"
    ]
    failing = device(
        desired={"bundle_ref": "app@2.0.0"},
        reconcile={"result": "failed", "reason": "engine unreachable"},
        observed={"containers": [{"name": "web", "state": "running", "health": "unhealthy"}]},
    )
    failing["sync_behind"] = 12
    assert jm.stuck_reasons(failing, NOW) == [
        "last reconcile failed: engine unreachable; the agent retries",
        "containers not healthy: web unhealthy",
        "the hub has not received 12 report row(s) the device held",
    ]
    failing["sync_behind_as_of"] = "2027-01-15T08:00:00.000Z"
    assert jm.stuck_reasons(failing, dm.model.parse_ts("2027-01-15T08:00:40.000Z") or 0)[-1] == (
        "the hub has not received 12 report row(s) the device held at its heartbeat 40s ago"
    )
    applying = device(deployment={"bundle_ref": "app@2.0.0", "status": "applying"})
    assert jm.stuck_reasons(applying, NOW) == ["still applying app@2.0.0"]


@pytest.mark.parametrize(
    ("old", "new", "merged"),
    [
        ([], ["a", "b"], ["a", "b"]),
        (["a", "b", "c"], ["b", "c", "d"], ["a", "b", "c", "d"]),
        (["a", "b"], ["a", "b"], ["a", "b"]),  # nothing new
        (["a", "b"], ["x", "y"], ["a", "b", "x", "y"]),  # rolled past a whole tail
        (["x", "x"], ["x", "x", "y"], ["x", "x", "y"]),  # repeated lines: longest overlap
    ],
)
def test_merge_tail(old: list[str], new: list[str], merged: list[str]) -> None:
    assert dm.merge_tail(old, new) == merged


def test_merge_tail_is_bounded_and_search_is_case_insensitive() -> None:
    many = [str(i) for i in range(dm.MAX_LOG_LINES + 10)]
    assert len(dm.merge_tail([], many)) == dm.MAX_LOG_LINES
    lines = ["GET /health 200", "ERROR disk full", "error: retry"]
    assert dm.search_lines(lines, "error") == ["ERROR disk full", "error: retry"]
    assert dm.search_lines(lines, "  ") == lines


def test_confirmations_say_how_many_devices() -> None:
    dry = {"dry_run": True, "devices": 12, "sample": ["pi-01", "pi-02", "pi-03", "pi-04"]}
    assert cm.assign_question("wm@1.3.0", "group:lab", dry) == (
        "Assign wm@1.3.0 to group lab — 12 devices (pi-01, pi-02, pi-03, …)?"
    )
    assert cm.impact({"devices": 1, "sample": ["d1"]}) == "1 device (d1)"
    assert cm.impact({"devices": 0, "sample": []}) == "0 devices"
    assert cm.impact({"devices": 1000, "sample": [], "more": True}) == "1000+ devices"
    assert cm.impact(None) == "the hub could not count the devices in advance"
    dry2 = {"devices": 2, "sample": []}
    assert cm.rollout_question("wm@1.3.0", "tag:lab", "10%", "10m", 1, dry2) == (
        "Start a rollout of wm@1.3.0 to tag lab — 2 devices; phases 10%, bake 10m, "
        "1 failure(s) tolerated?"
    )
    assert cm.rollout_question("wm@1.3.0", "tag:lab", None, None, "2%", dry2).endswith(
        "2 devices; one phase, 2% of the devices failing tolerated?"
    )
    rollout = {"id": "r1", "bundle": "wm", "version": "1.3.0", "state": "running",
               "counts": {"Pending": 2, "Updating": 1, "Succeeded": 3, "Failed": 0}}  # fmt: skip
    question = cm.rollout_action_question("abort", rollout)
    assert question.startswith("Abort rollout r1 (wm@1.3.0, 6 devices: 2 pending, 1 updating)?")


def test_rollout_form_parsing() -> None:
    """Blank fields are the hub's defaults; the rest go through the CLI's parsers."""
    assert cm.rollout_request("wm@1", " tag:lab ", "", "", "") == (
        "wm@1", "tag:lab", None, None, None,
    )  # fmt: skip
    assert cm.rollout_request("wm@1", "device:d1", " 1%, 10% ,100%", "10m", "2%") == (
        "wm@1", "device:d1", "1%,10%,100%", "10m", "2%",
    )  # fmt: skip
    assert cm.rollout_request("wm@1", "tag:lab", "5,50", "90s", "2")[4] == 2
    for args, field, message in [
        ((None, "tag:lab", "", "", ""), "bundle@version", "pick a bundle"),
        (("wm@1", "lab", "", "", ""), "target", "target must be"),
        (("wm@1", "tag:lab", "1%,ten", "", ""), "phases", "is not phases like"),
        (("wm@1", "tag:lab", "", "soon", ""), "bake", "'soon'"),
        (("wm@1", "tag:lab", "", "", "-1"), "max failures", "is not a count"),
    ]:
        with pytest.raises(FieldError, match=message) as caught:
            cm.rollout_request(*args)
        assert caught.value.field == field


def test_rollout_controls_follow_the_state() -> None:
    assert cm.rollout_allows("running", "pause") and not cm.rollout_allows("paused", "pause")
    assert cm.rollout_allows("paused", "resume") and not cm.rollout_allows("running", "resume")
    assert cm.rollout_allows("paused", "abort") and not cm.rollout_allows("succeeded", "abort")


def test_read_only_hides_writes_only() -> None:
    for action in ("assign", "unassign", "push", "restart", "decommission", "reconcile",
                   "start_rollout", "rollout_control"):  # fmt: skip
        assert cm.write_allowed(action, read_only=True) is False
        assert cm.write_allowed(action, read_only=False) is True
    assert cm.write_allowed("tab", read_only=True) is True


def test_states_have_colours_and_unknown_words_none() -> None:
    assert dm.state_style("Failed") == "red" and dm.state_style("online") == "green"
    assert dm.state_style("updating") == "yellow" and dm.state_style("whatever") == ""


def test_describe_and_yaml_of_a_device() -> None:
    device = {
        "id": "pi-01", "status": "online", "last_seen": "2026-11-26T18:00:00.000Z",
        "hostname": "pi", "os": "linux", "arch": "arm64", "engine": "podman",
        "agent_version": "0.1.0", "tenant": "acme", "tags": ["lab"], "groups": [],
        "desired": {"bundle": "wm", "version": "1.3.0", "via": "group:lab"},
        "desired_generation": 7,
        "reported": {"as_of": "2026-11-26T18:00:00.000Z", "state": {"bundle_ref": "wm@1.3.0"}},
    }  # fmt: skip
    now = 1_795_716_060.0  # 60 s after last_seen
    lines = dm.describe_lines(device, now)
    assert lines[0] == "Device:      pi-01"
    assert "Desired:     wm@1.3.0 (via group:lab), generation 7" in lines
    assert "Running:     wm@1.3.0" in lines
    docs = dm.yaml_docs(device)
    assert docs["desired"]["version"] == "1.3.0" and docs["desired_generation"] == 7
