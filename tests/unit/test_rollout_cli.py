"""``signalbeam rollout ...``: argument parsing into API bodies, and the human output."""

from __future__ import annotations

import argparse
import io

import pytest

from tui import cli
from tui.rollout_cli import cmd_watch, percent, print_list, print_rollout

ROLLOUT = {
    "id": "ro-1a2b3c4d",
    "bundle": "warehouse-monitor",
    "version": "1.3.0",
    "target": "group:lab",
    "state": "paused",
    "reason": "1 device failed, more than max-failures 0; resume to go on anyway, or abort",
    "canary_percent": 50,
    "steps": "50%,100%",
    "bake": 0,
    "max_failures": 0,
    "max_failures_allowed": 0,
    "phase": 1,
    "phase_count": 2,
    "phases": [
        {"number": 1, "size": 1, "state": "running", "done": 1, "failed": 1, "max_failures": 0,
         "bake_left": 0, "counts": {}},
        {"number": 2, "size": 1, "state": "pending", "done": 0, "failed": 0, "max_failures": 0,
         "bake_left": 0, "counts": {}},
    ],
    "counts": {"Pending": 1, "Updating": 0, "Succeeded": 0, "Failed": 1},
    "total": 2,
    "offline": 1,
    "created_at": "2026-11-26T18:00:00.000Z",
    "devices": [
        {"device": "dev-0", "phase": 1, "state": "Failed", "online": True,
         "reason": "rolled back: relay unhealthy"},
        {"device": "dev-1", "phase": 2, "state": "Pending", "online": False,
         "reason": "waiting for phase 2"},
    ],
    "devices_cursor": "dev-1",
}  # fmt: skip


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["rollout", *argv])


@pytest.mark.parametrize(("text", "want"), [("10%", 10), ("0", 0), ("100%", 100)])
def test_percent(text: str, want: int) -> None:
    assert percent(text) == want


@pytest.mark.parametrize("text", ["101%", "-1", "ten", "10.5%", ""])
def test_bad_percent(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        percent(text)


def test_start_builds_the_body() -> None:
    a = parse("start", "warehouse-monitor@1.3.0", "--target", "group:lab", "--canary", "10%",
              "--max-failures", "2")  # fmt: skip
    assert a.request(a) == (
        "rollouts.start",
        {"bundle": "warehouse-monitor@1.3.0", "target": "group:lab", "canary_percent": 10,
         "max_failures": 2},
    )  # fmt: skip
    a = parse("start", "x@1.0.0", "--target", "tag:rpi")
    assert a.request(a) == ("rollouts.start", {"bundle": "x@1.0.0", "target": "tag:rpi"})
    a = parse("start", "x@1.0.0", "--target", "tag:rpi", "--phases", "1%, 10%,50%,100%",
              "--bake", "10m", "--max-failures", "2%")  # fmt: skip
    assert a.request(a) == (
        "rollouts.start",
        {"bundle": "x@1.0.0", "target": "tag:rpi", "phases": "1%,10%,50%,100%", "bake": "10m",
         "max_failures": "2%"},
    )  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [
        ["--phases", "1%,ten"],
        ["--phases", "1%", "--canary", "10%"],  # one or the other
        ["--bake", "10 minutes"],
        ["--max-failures", "2.5"],
        ["--max-failures", "two"],
    ],
)
def test_bad_start_flags_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse("start", "x@1.0.0", "--target", "tag:rpi", *argv)


def test_verbs_map_to_api_requests() -> None:
    for verb in ("pause", "resume", "abort"):
        a = parse(verb, "ro-1")
        assert a.request(a) == (f"rollouts.{verb}", {"id": "ro-1"})
    a = parse("list", "--state", "paused")
    assert a.request(a) == ("rollouts.list", {"state": "paused"})
    a = parse("status", "ro-1")
    assert a.request(a) == ("rollouts.get", {"id": "ro-1"}) and not hasattr(a, "offline")


def test_watch_runs_its_own_loop() -> None:
    a = parse("status", "ro-1", "--watch", "--watch-timeout", "5")
    assert a.offline is cmd_watch and a.watch_timeout == 5.0


def test_human_output() -> None:
    out = io.StringIO()
    print_rollout(ROLLOUT, out)
    text = out.getvalue()
    assert text.startswith("ro-1a2b3c4d  warehouse-monitor@1.3.0 -> group:lab  [paused]")
    assert "phase 1 of 2 · steps 50%,100% · max failures 0" in text
    assert "1/1" in text and "1 (max 0)" in text  # phase 1: done, failed against its limit
    assert "pending 1 · updating 0 · succeeded 0 · failed 1 · offline 1" in text
    assert "OFFLINE" in text and "rolled back: relay unhealthy" in text
    assert "(more devices: --cursor dev-1)" in text
    out = io.StringIO()
    print_list({"items": [ROLLOUT], "next_cursor": None}, out)
    assert "ro-1a2b3c4d" in out.getvalue() and "1/2" in out.getvalue()
