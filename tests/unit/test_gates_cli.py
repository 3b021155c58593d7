"""Update gates in the operator's tools: ``signalbeam maintenance`` and ``device
force-update`` (parsing into API bodies, the typed device count), ``device show``, the
fleet row and the device screen's lines."""

from __future__ import annotations

import argparse
import io
from typing import Any

import pytest

from tui import cli
from tui.errors import UsageError
from tui.gates_cli import confirm_count, print_windows, print_windows_set
from tui.models import detail as dm
from tui.models import fleet as fm
from tui.models import journal as jm
from tui.output import show_device

GATE = {
    "reason": "locked by anna since 2026-12-04T21:00+01:00",
    "kind": "locked",
    "bundle_ref": "hello@2.0.0",
    "generation": 9,
    "locks": [{"who": "anna", "since": 1.0, "source": "api"}],
}


def request(*argv: str) -> tuple[str, dict[str, Any]]:
    args: argparse.Namespace = cli.build_parser().parse_args(list(argv))
    verb, body = args.request(args)
    return verb, body


def test_maintenance_commands_build_their_bodies() -> None:
    assert request("maintenance", "set", "group:lab", "Sat,Sun 02:00-05:00", "* 23:00-23:30") == (
        "maintenance.set",
        {"target": "group:lab", "windows": ["Sat,Sun 02:00-05:00", "* 23:00-23:30"]},
    )
    assert request("maintenance", "set", "device:pi-1", "--any-time") == (
        "maintenance.set",
        {"target": "device:pi-1", "windows": []},
    )
    assert request("maintenance", "clear", "group:lab") == (
        "maintenance.set",
        {"target": "group:lab", "clear": True},
    )
    with pytest.raises(UsageError):
        request("maintenance", "set", "group:lab")


def test_force_update_wants_the_flag_and_the_count() -> None:
    assert request(
        "device", "force-update", "pi-2", "pi-1", "--force-through-lock", "--confirm", "2"
    ) == ("devices.force_update", {"ids": ["pi-1", "pi-2"], "confirm": 2})
    with pytest.raises(SystemExit):  # --force-through-lock is required
        cli.build_parser().parse_args(["device", "force-update", "pi-1", "--confirm", "1"])
    assert confirm_count(3, None, ask=lambda q: " 3 ") == 3
    with pytest.raises(UsageError, match="not confirmed"):
        confirm_count(3, None, ask=lambda q: "y")


def test_outputs() -> None:
    out = io.StringIO()
    print_windows_set(
        {"target": "group:lab", "windows": ["Sat 02:00-05:00"], "changed": True,
         "devices": ["a", "b"]},
        out,
    )  # fmt: skip
    assert "group:lab: maintenance windows set: Sat 02:00-05:00" in out.getvalue()
    assert "re-sent to 2 device(s)" in out.getvalue()
    out = io.StringIO()
    print_windows({"items": [{"target_kind": "device", "target": "a", "windows": []}]}, out)
    assert "device:a" in out.getvalue() and "any time" in out.getvalue()

    out = io.StringIO()
    show_device({"id": "pi-1", "gate": GATE, "maintenance_windows": ["* 02:00-03:00"]}, out)
    text = out.getvalue()
    assert "hello@2.0.0 deferred: locked by anna since 2026-12-04T21:00+01:00" in text
    assert "* 02:00-03:00" in text


def test_fleet_row_and_device_screen_show_the_deferral() -> None:
    doc = {"id": "pi-1", "status": "online", "running": "hello@1.0.0",
           "desired": {"bundle": "hello", "version": "2.0.0", "via": "group:lab"},
           "deployment": {"status": "healthy"}, "gate": GATE}  # fmt: skip
    row = fm.device_row(doc)
    assert row.deferred == "locked by anna"
    bundle = fm.cells(row, 0.0)[fm.COLUMN_KEYS.index("bundle")]
    assert bundle == ("hello@1.0.0 → 2.0.0 ⏸ locked by anna", "warn")
    window = {"kind": "window", "until": "2026-12-05T02:00+01:00", "reason": "outside"}
    assert fm.device_row({**doc, "gate": window}).deferred == "window until 12-05 02:00"
    assert fm.device_row({**doc, "gate": None}).deferred is None
    assert dm.gate_lines({"gate": GATE, "maintenance_windows": []}) == [
        "update hello@2.0.0 deferred: locked by anna since 2026-12-04T21:00+01:00",
        "maintenance windows any time (set at the hub)",
    ]
    assert any("force-update" in s for s in jm.stuck_reasons({"status": "online",
               "reported": {"state": {}}, "gate": GATE}, 0.0))  # fmt: skip
    assert "Type 2 to go on" in fm.fleet_question("force_update", ["a", "b"])
