"""The Fleet table's pure rules: rows from both document shapes, cells, the bundle mark,
sparklines, sorting, the filter with `!`, and the ids a change notice names."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tui.models import common as model
from tui.models import fleet as fm
from tui.widgets.fleet_table import FIXED_WIDTH

NOW = 1_800_000_000.0


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def reported(**state: Any) -> dict[str, Any]:
    return {"state": state, "as_of": iso(NOW - 10)}


def device(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "d1", "status": "online", "tags": ["rpi", "lab"], "groups": []}
    return {**base, **fields}


DESIRED = {"bundle": "wm", "version": "1.3.0", "via": "tag:rpi"}


def test_states_from_devices_get_documents() -> None:
    running = reported(bundle_ref="wm@1.3.0", containers=[{"name": "a", "state": "running"}])
    row = fm.device_row(device(desired=DESIRED, reported=running, last_seen=iso(NOW - 30)))
    assert row.state == "online"
    assert [c for c, _ in fm.cells(row, NOW)][:6] == [
        "d1", "● online", "<1m", "rpi,lab", "-", "wm@1.3.0"
    ]  # fmt: skip
    old = reported(bundle_ref="wm@1.2.0")
    assert fm.device_row(device(desired=DESIRED, reported=old)).state == "updating"
    # offline devices are not "updating": they cannot be until they come back
    assert fm.device_row(device(status="offline", desired=DESIRED)).state == "offline"
    assert fm.device_row(device(reported=old)).state == "online"  # nothing desired
    bad = reported(bundle_ref="wm@1.3.0", containers=[{"name": "a", "state": "exited"}])
    assert fm.device_row(device(desired=DESIRED, reported=bad)).state == "failed"
    never = fm.device_row({"id": "d2", "status": "unknown"})
    assert fm.cells(never, NOW)[1] == ("? unknown", "")


def test_states_from_the_summary_view() -> None:
    doc = device(desired=DESIRED, running="wm@1.3.0", deployment={"status": "healthy"})
    assert fm.device_row(doc).state == "online"
    applying = {**doc, "deployment": {"status": "applying", "error": None}}
    assert fm.device_row(applying).state == "updating"
    failed = {**doc, "deployment": {"status": "rolled_back", "error": "health check"}}
    assert fm.device_row(failed).state == "failed"
    assert fm.device_row({**doc, "containers": {"total": 2, "bad": 1}}).state == "failed"
    row = fm.device_row(
        {**doc, "rollout": {"id": "r1", "state": "Failed", "reason": "x"},
         "metrics": {"cpu": {"last": 42.4, "spark": [0.0, 10.0, None, None, 50.0, 100.0]}}}
    )  # fmt: skip
    cells = dict(zip(fm.COLUMN_KEYS, fm.cells(row, NOW), strict=True))
    assert cells["rollout"] == ("Failed", "bad") and cells["data"] == ("-", "")
    assert cells["cpu"][0] == "▁▁  ▅█  42" and cells["mem"][0] == "-"


def test_the_data_column_marks_a_metered_link_with_bytes_used_against_its_budget() -> None:
    def data(metered: Any) -> fm.Cell:
        return fm.data_cell(fm.device_row(device(running="wm@1.3.0", metered=metered)))

    # The summary view's `metered` (from the device's last full heartbeat)...
    assert data({"budget": 100_000, "bytes_day": 41_200, "over": False}) == ("41%", "")
    assert data({"budget": 100_000, "bytes_day": 130_000, "over": True}) == ("130% over", "bad")
    assert data({"budget": 100_000, "bytes_day": None, "over": False}) == ("?", "dim")
    assert data(None) == ("-", "") and data({"budget": None, "bytes_day": 5}) == ("-", "")
    # ...and devices.get's: a budget the hub set that the device does not run under yet is
    # not its budget (the device screen says "not applied yet").
    got = {"budget_set": 100_000, "budget": None, "bytes_day": 900, "over": False}
    assert fm.data_cell(fm.device_row(device(metered=got))) == ("-", "")
    text = data({"budget": 10_000, "bytes_day": 99_990})[0]
    assert text == "1000% over" and len(text) <= FIXED_WIDTH["data"]  # fits its column
    rows = [
        fm.device_row(device(id="a")),
        fm.device_row(device(id="b", metered={"budget": 100, "bytes_day": 20})),
        fm.device_row(device(id="c", metered={"budget": 100, "bytes_day": 90})),
    ]
    assert [r.id for r in fm.ordered(rows, fm.Sort("data"))] == ["c", "b", "a"]


def test_offline_age_and_status_text_carry_the_state_without_colour() -> None:
    row = fm.device_row(device(status="offline", last_seen=iso(NOW - 240)))
    assert fm.status_text(row, NOW) == "○ offline 4m"
    assert fm.status_text(row, NOW + 3600) == "○ offline 1h"
    for state in fm.STATES:
        assert fm.GLYPH[state] and state in fm.status_text(
            fm.DeviceRow("x", "", state, state, None, (), (), None, None, None, None), NOW
        )


@pytest.mark.parametrize(
    ("desired", "running", "text"),
    [
        (None, None, "-"),
        (None, "wm@1.2.0", "wm@1.2.0"),
        ("wm@1.2.0", "wm@1.2.0", "wm@1.2.0"),
        ("wm@1.3.0", "wm@1.2.0", "wm@1.2.0 → 1.3.0"),
        ("wm@1.3.0", None, "- → wm@1.3.0"),
        ("other@2", "wm@1.2.0", "wm@1.2.0 → other@2"),
    ],
)
def test_bundle_marks_desired_versus_running(
    desired: str | None, running: str | None, text: str
) -> None:
    assert fm.bundle_text(desired, running) == text


@given(st.lists(st.one_of(st.none(), st.floats(-50, 500)), max_size=30))
def test_sparkline_is_bounded(points: list[float | None]) -> None:
    line = fm.sparkline(points)
    assert len(line) <= fm.SPARK_WIDTH
    assert set(line) <= set(fm.SPARK) | {" "}


def test_filter_terms_and_negation() -> None:
    rows = [
        fm.device_row(device(id="a", tags=["lab"], hostname="alpha")),
        fm.device_row(device(id="b", tags=["field"], groups=["north"], status="offline")),
        fm.device_row(device(id="c", tags=["lab"], desired=DESIRED, running="wm@1.2.0")),
    ]

    def keep(text: str) -> list[str]:
        f = fm.parse_filter(text)
        return [r.id for r in rows if f.keeps(r)]

    assert keep("tag:lab") == ["a", "c"]
    assert keep("!tag:lab") == ["b"]
    assert keep("group:north") == ["b"] and keep("!group:north") == ["a", "c"]
    assert keep("status:offline") == ["b"]
    assert keep("status:online") == ["a", "c"]  # online includes updating
    assert keep("status:updating") == ["c"] and keep("!status:updating") == ["a", "b"]
    assert keep("bundle:wm") == ["c"] and keep("bundle:wm@1.3.0") == ["c"]
    assert keep("ALPH") == ["a"] and keep("!alph tag:lab") == ["c"]
    assert fm.parse_filter("!tag:lab x").text() == "!tag:lab x"
    assert fm.parse_filter("status:decommissioned").wants_decommissioned
    with pytest.raises(fm.FilterError, match="unknown status 'sideways'"):
        fm.parse_filter("status:sideways")
    with pytest.raises(fm.FilterError, match="needs a value"):
        fm.parse_filter("tag:")
    with pytest.raises(fm.FilterError, match="! needs a word"):
        fm.parse_filter("!")


@given(st.lists(st.sampled_from(["tag:lab", "group:north", "status:offline", "a", "zz"])))
def test_negation_is_the_complement(words: list[str]) -> None:
    row = fm.device_row(device(id="a", tags=["lab"], status="offline"))
    for word in words:
        assert fm.parse_filter(word).keeps(row) != fm.parse_filter("!" + word).keeps(row)


def test_sorting_and_the_sort_cycle() -> None:
    rows = [
        fm.device_row(device(id="a", metrics={"cpu": {"last": 5.0, "spark": []}})),
        fm.device_row(device(id="b", status="offline", last_seen=iso(NOW))),
        fm.device_row(device(id="c", metrics={"cpu": {"last": 80.0, "spark": []}})),
    ]
    assert [r.id for r in fm.ordered(rows, fm.Sort("cpu"))] == ["c", "a", "b"]
    assert [r.id for r in fm.ordered(rows, fm.Sort("status"))] == ["b", "a", "c"]
    assert [r.id for r in fm.ordered(rows, fm.Sort("device", True))] == ["c", "b", "a"]
    s = fm.Sort()
    seen = []
    for _ in fm.COLUMNS:
        seen.append(s.column)
        s = s.next_column()
    assert seen == list(fm.COLUMN_KEYS) and s.column == "device"
    assert fm.Sort("cpu").by("cpu") == fm.Sort("cpu", True)
    assert fm.Sort("cpu", True).by("mem") == fm.Sort("mem")
    assert fm.Sort("bundle", True).label() == "Bundle ▼"


def test_summary_counts_and_text() -> None:
    rows = [
        fm.device_row(device(id="a")),
        fm.device_row(device(id="b", desired=DESIRED)),
        fm.device_row(device(id="c", status="offline")),
    ]
    counts = fm.summarize(rows)
    assert counts == {"total": 3, "online": 2, "offline": 1, "updating": 1, "failed": 0}
    assert fm.summary_text(counts, 5, fm.Sort()) == (
        "3 of 5 devices │ online 2 │ offline 1 │ updating 1 │ failed 0 │ sort Device ▲"
    )


def test_an_offline_device_keeps_its_failure() -> None:
    """Offline reads first (presence), but the failure it went away with still shows, is
    found by status:failed and counted as failed."""
    gone = fm.device_row(
        device(id="f", status="offline", last_seen=iso(NOW - 240), desired=DESIRED,
               running="wm@1.2.0", deployment={"status": "failed", "error": "pull"})
    )  # fmt: skip
    assert gone.state == "offline"
    assert fm.cells(gone, NOW)[1] == ("○ offline 4m ✖", "dim")
    assert fm.parse_filter("status:failed").keeps(gone)
    assert fm.parse_filter("status:offline").keeps(gone)
    assert not fm.parse_filter("!status:failed").keeps(gone)
    healthy_gone = fm.device_row(device(id="g", status="offline", last_seen=iso(NOW - 240)))
    assert fm.cells(healthy_gone, NOW)[1][0] == "○ offline 4m"
    assert not fm.parse_filter("status:failed").keeps(healthy_gone)
    retired = fm.device_row(
        device(id="r", status="decommissioned", deployment={"status": "failed", "error": "x"})
    )
    assert not fm.parse_filter("status:failed").keeps(retired)
    counts = fm.summarize([gone, healthy_gone, retired])
    assert (counts["offline"], counts["failed"]) == (2, 1)
    # the longest such status still fits the column's fixed width
    assert len("○ offline 59m ✖") <= FIXED_WIDTH["status"]


def test_changed_columns() -> None:
    row = fm.device_row(device(status="offline", last_seen=iso(NOW - 59)))
    # the status age and the Seen column both cross the minute
    assert fm.changed_columns(fm.cells(row, NOW), fm.cells(row, NOW + 2)) == [1, 2]
    assert fm.changed_columns(fm.cells(row, NOW), fm.cells(row, NOW)) == []


@pytest.mark.parametrize(
    ("doc", "ids"),
    [
        ({"kind": "devices", "action": "updated", "ids": ["a", "b"]}, ["a", "b"]),
        ({"kind": "devices", "action": "updated", "ids": None}, None),
        ({"kind": "devices", "action": "tagged", "id": "a", "tag": "x"}, ["a"]),
        ({"kind": "devices", "action": "offline", "devices": ["a", "a"]}, ["a"]),
        ({"kind": "reported", "action": "changed", "devices": ["c"]}, ["c"]),
        ({"kind": "desired", "action": "changed", "devices": []}, None),
        ({"kind": "groups", "action": "member_added", "name": "n", "device": "d"}, ["d"]),
        ({"kind": "groups", "action": "created", "name": "n"}, []),
        ({"kind": "groups", "action": "deleted", "name": "n", "members": ["e"]}, ["e"]),
        ({"kind": "rollouts", "action": "progress", "id": "r1"}, None),
    ],
)
def test_notice_ids(doc: dict[str, Any], ids: list[str] | None) -> None:
    assert fm.notice_ids(doc) == ids


def test_a_failed_deployment_that_recovered_is_not_failed() -> None:
    """Defect: the row stayed "✖ failed" until the next deployment although the device
    reported every container healthy after the failure (the agent gave the generation up
    past its health window, then the containers came up)."""
    failed_at, later = "2026-11-26T18:00:00.000Z", "2026-11-26T18:01:00.000Z"
    doc = device(
        status="online", running=None, desired={"bundle": "wm", "version": "1.3.0"},
        deployment={"status": "failed", "error": "not healthy in 30s", "as_of": failed_at,
                    "bundle_ref": "wm@1.3.0"},
        containers={"total": 2, "bad": 0, "as_of": later},
    )  # fmt: skip
    row = fm.device_row(doc)
    assert row.state == "online" and row.problem is None and row.running == "wm@1.3.0"
    # a snapshot from before the failure, or with a bad container, does not clear it
    stale = {**doc, "containers": {"total": 2, "bad": 0, "as_of": "2026-11-26T17:59:00.000Z"}}
    assert fm.device_row(stale).state == "failed"
    sick = {**doc, "containers": {"total": 2, "bad": 1, "as_of": later}}
    assert fm.device_row(sick).state == "failed"
    # a rollback is not superseded: the device runs an older version than wanted
    rolled = {**doc, "deployment": {**doc["deployment"], "status": "rolled_back"}}
    assert fm.device_row(rolled).state == "failed"
    # the same rule from a devices.get document (the device screen)
    reported = {"state": {
        "deployment": {"status": "failed", "reason": "x", "bundle_ref": "wm@1.3.0",
                       "as_of": failed_at},
        "observed": {"as_of": later, "containers": [
            {"name": "a", "state": "running", "health": "healthy"}]},
    }}  # fmt: skip
    assert model.problem(reported) is None and model.health(reported) == "healthy"
    assert model.running_ref(reported) == "wm@1.3.0"
    reported["state"]["observed"]["as_of"] = "2026-11-26T17:00:00.000Z"
    assert model.problem(reported) is not None
