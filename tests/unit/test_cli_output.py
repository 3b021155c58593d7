"""The CLI's pure parts: human sizes and ages, tables, `device show`/`device status` text,
the follow helpers, the unknown-verb line, --version, and the reply timeout of a remote
command."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

import pytest

from protocol.api import DEVICE_WAIT, RESTART_STOP_TIMEOUT, RESTART_WAIT, device_wait
from sbutil.cli import VERSION, suggest, unknown_verb_message
from tui.cli import _has_verb, build_parser
from tui.client import reply_timeout
from tui.output import (
    age,
    human_bytes,
    human_duration,
    metric_value,
    show_agent_status,
    show_device,
    table,
)
from tui.stream import event_line, fresh_lines, newer_events

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (250, "4m10s"),
        (300, "5m"),
        (3599, "59m"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (20 * 3600, "20h"),
        (2 * 86400 + 5 * 3600, "2d5h"),
        (40 * 86400, "40d"),
        (3 * 365 * 86400, "3y"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_age_of_iso_stamps_and_unix_seconds() -> None:
    assert age("2027-01-15T07:55:00.000Z", NOW) == "5m ago"
    assert age(NOW - 30, NOW) == "30s ago"
    assert age("2027-01-16T08:00:00Z", NOW) == "in 24h"  # an expiry
    assert age(None, NOW) == "-" and age("", NOW) == "-"
    assert age("soon", NOW) == "soon"  # not a time: shown as it is


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (512, "512 B"), (1536, "1.5 KiB"), (82_050_000_000.0, "76.4 GiB")],
)
def test_human_bytes(n: float, text: str) -> None:
    assert human_bytes(n) == text


def test_metric_values_in_their_unit() -> None:
    assert metric_value("mem.available_bytes", 82050000000.0) == "76.4 GiB"
    assert metric_value("cpu.percent", 12.345) == "12.3%"
    assert metric_value("cpu", 2.0) == "2"
    assert metric_value("container.relay.memory_bytes", 33554432.0) == "32.0 MiB"


def test_table_shows_times_as_ages_and_wide_as_sent() -> None:
    rows = [{"id": 1, "ts": "2027-01-15T07:59:00Z", "kind": "tagged", "ok": True, "tags": []}]
    out = io.StringIO()
    table(rows, ["id", "ts", "kind", "ok", "tags"], out, now=NOW)
    head, row = out.getvalue().splitlines()
    assert head.split() == ["ID", "AGE", "KIND", "OK", "TAGS"]
    assert row.split() == ["1", "60s", "ago", "tagged", "yes", "-"]
    assert head.index("KIND") == row.index("tagged")  # aligned
    out = io.StringIO()
    table(rows, ["id", "ts"], out, wide=True, now=NOW)
    assert out.getvalue().splitlines()[0].split() == ["ID", "TS"]
    assert "2027-01-15T07:59:00Z" in out.getvalue()
    out = io.StringIO()
    table([], ["id"], out)
    assert out.getvalue() == "(none)\n"


DEVICE = {
    "id": "rpi-017",
    "tenant": "acme",
    "hostname": "rpi-017",
    "arch": "arm64",
    "os": "linux",
    "engine": "podman",
    "agent_version": "0.1.0",
    "status": "online",
    "enrolled_at": "2027-01-10T08:00:00Z",
    "last_seen": "2027-01-15T07:59:50Z",
    "decommissioned": False,
    "tags": ["rpi"],
    "groups": ["lab"],
    "desired": {"bundle": "warehouse-monitor", "version": "1.3.0", "via": "group:lab"},
    "reported": {
        "as_of": "2027-01-15T07:59:30Z",
        "state": {
            "running": {"bundle_ref": "warehouse-monitor@1.3.0", "generation": 3},
            "deployment": {"bundle_ref": "warehouse-monitor@1.3.0", "status": "healthy"},
            "observed": {
                "containers": [
                    {"service": "relay", "name": "sb-relay-1", "state": "running",
                     "health": "healthy", "image": "relay:1.3"},
                ]
            },
        },
    },
}  # fmt: skip


def test_device_show_is_readable() -> None:
    out = io.StringIO()
    show_device(DEVICE, out, now=NOW)
    text = out.getvalue()
    assert "{" not in text  # no JSON dump
    lines = text.splitlines()
    facts = lines[: lines.index("")]
    shown = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in facts}
    assert shown["status"] == "online (last seen 10s ago)"
    assert shown["desired"] == "warehouse-monitor@1.3.0 (via group:lab)"
    assert shown["running"] == "warehouse-monitor@1.3.0"
    assert shown["deployment"] == "warehouse-monitor@1.3.0 healthy"
    assert shown["reported"] == "30s ago" and shown["enrolled"] == "5d ago"
    header = next(line for line in lines if line.startswith("SERVICE"))
    assert header.split() == ["SERVICE", "NAME", "STATE", "HEALTH", "IMAGE"]
    assert any(line.split()[:4] == ["relay", "sb-relay-1", "running", "healthy"] for line in lines)
    # Values line up: every field's value starts in the same column.
    starts = {len(line) - len(line[line.index("  ") :].lstrip()) for line in facts}
    assert len(starts) == 1, facts


def test_device_show_with_nothing_reported() -> None:
    out = io.StringIO()
    show_device({**DEVICE, "desired": None, "reported": None}, out, now=NOW)
    assert "desired   nothing assigned\n" in out.getvalue()
    assert "reported  nothing reported yet\n" in out.getvalue()


def test_device_status_is_readable() -> None:
    status = {
        "device_id": "rpi-017",
        "desired": {"generation": 3, "source": "hub", "bundle_ref": "warehouse-monitor@1.3.0"},
        "deployment": {"generation": 3, "bundle_ref": "warehouse-monitor@1.3.0",
                       "status": "healthy", "reason": None},
        "last_reconcile": {"run_id": 12, "result": "ok", "reason": None,
                           "started_at": "2027-01-15T07:58:00Z", "finished_at": None},
        "containers": [{"service": "relay", "name": "sb-relay-1", "state": "running",
                        "health": "healthy", "image": "relay:1.3"}],
        "outbox": {"pending": 2, "bytes": 2048},
        "metrics": {"cpu.percent": 3.5, "mem.available_bytes": 82050000000.0},
        "sync": {"mode": "leaf", "online": True},
    }  # fmt: skip
    out = io.StringIO()
    show_agent_status(status, out, now=NOW)
    text = out.getvalue()
    assert "{" not in text
    assert "desired     generation 3 (hub): warehouse-monitor@1.3.0" in text
    assert "last run    #12 ok 2m ago" in text
    assert "hub link    online, mode leaf" in text
    assert "outbox      2 row(s) to send (2.0 KiB)" in text
    assert "cpu.percent 3.5%" in text and "mem.available_bytes 76.4 GiB" in text


def test_fresh_lines_of_a_re_polled_tail() -> None:
    assert fresh_lines([], ["a", "b"]) == ["a", "b"]
    assert fresh_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]
    assert fresh_lines(["a", "b"], ["a", "b"]) == []
    assert fresh_lines(["a", "b"], ["x", "y"]) == ["x", "y"]  # rolled past a whole tail


def test_newer_events_oldest_first() -> None:
    items = [{"id": 9}, {"id": 8}, {"id": 7}, {"id": 6}]
    assert [e["id"] for e in newer_events(items, 7)] == [8, 9]
    line = event_line({"ts": NOW, "device_id": None, "kind": "rollout.started", "message": "x"})
    assert line.split()[1:] == ["hub", "rollout.started", "x"]


def test_unknown_verb_suggests_the_close_ones() -> None:
    assert suggest("devcies", ["devices", "device", "group", "tag"])[0] == "devices"
    assert suggest("roll", ["rollout", "tag"]) == ["rollout"]
    line = unknown_verb_message("signalbeam device", "restrat", ["restart", "logs", "show"])
    assert line == "signalbeam device: error: unknown verb 'restrat' (did you mean 'restart'?)"
    assert "verbs: a, b" in unknown_verb_message("x", "zzz", ["b", "a"])


def test_has_verb_sees_typos_but_not_option_values() -> None:
    parser = build_parser()
    assert _has_verb(parser, ["devcies"])  # a typo is answered, not turned into the TUI
    assert not _has_verb(parser, ["-o", "yaml", "--hub", "nats://h:4222", "--timeout", "3"])
    assert _has_verb(parser, ["--version"])


def test_output_choice() -> None:
    from tui.cliutil import output_format

    parser = build_parser()
    assert output_format(parser.parse_args(["devices"])) == "text"
    assert output_format(parser.parse_args(["devices", "--json"])) == "json"
    assert output_format(parser.parse_args(["-o", "yaml", "devices"])) == "yaml"
    assert output_format(parser.parse_args(["devices", "-o", "wide"])) == "wide"


def test_version_is_the_package_version() -> None:
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert project["project"]["version"] == VERSION


def test_a_restart_waits_through_the_stop_timeout() -> None:
    parser = build_parser()
    restart = parser.parse_args(["device", "restart", "dev-1", "relay"])
    assert restart.request(restart) == (
        "devices.restart",
        {"id": "dev-1", "container": "relay", "timeout": RESTART_WAIT},
    )
    assert device_wait("devices.restart") == RESTART_WAIT > RESTART_STOP_TIMEOUT
    logs = parser.parse_args(["device", "logs", "dev-1", "relay"])
    assert logs.request(logs)[1]["timeout"] == DEVICE_WAIT == device_wait("logs")
    # The client waits for the hub's answer, which comes after the device wait.
    assert reply_timeout("devices.restart", {"timeout": RESTART_WAIT}, 5.0) > RESTART_WAIT
    assert reply_timeout("devices.list", {"timeout": 60}, 5.0) == 5.0


def test_websocket_client_skipped_only_by_the_entry_point_and_not_for_ws_hubs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from tui import cliutil

    monkeypatch.delitem(sys.modules, "aiohttp", raising=False)
    monkeypatch.delitem(sys.modules, "nats", raising=False)
    cliutil.skip_websocket_client("nats://h:4222")  # not the entry point: nothing decided
    assert "aiohttp" not in sys.modules
    monkeypatch.setattr(cliutil, "LEAN_IMPORTS", True)
    cliutil.skip_websocket_client("ws://h:8080")  # a websocket hub needs it
    assert "aiohttp" not in sys.modules
    cliutil.skip_websocket_client("tls://h:4222")
    assert sys.modules["aiohttp"] is None
    monkeypatch.delitem(sys.modules, "aiohttp")
