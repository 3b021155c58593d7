"""``signalbeam maintenance set|clear|list`` and ``signalbeam device force-update``.

Kept apart from ``tui/cli.py`` (one call to ``add_gate_commands`` there). Windows use the
grammar of docs/bundles.md ("Maintenance windows"); the hub validates them and names the
window and the part at fault. ``force-update`` starts a device's assigned version through
its update locks and maintenance windows: it asks for the number of devices, typed, and the
hub checks that number too (``devices.force_update``'s ``confirm``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TextIO

from tui.errors import UsageError
from tui.output import table

Printer = Callable[..., None]


def print_windows_set(r: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    windows = r.get("windows")
    what = "inherited (bundle's or group's)" if windows is None else ", ".join(windows)
    devices = r.get("devices") or []
    change = "set" if r.get("changed") else "unchanged"
    print(f"{r['target']}: maintenance windows {change}: {what or 'any time'}", file=out)
    if devices:
        print(f"desired state re-sent to {len(devices)} device(s)", file=out)


def print_windows(r: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    rows = [
        {
            "target": f"{i['target_kind']}:{i['target']}",
            "windows": ", ".join(i["windows"]) or "any time",
            "set_by": i.get("set_by"),
            "set_at": i.get("set_at"),
        }
        for i in r.get("items", [])
    ]
    table(rows, ["target", "windows", "set_by", "set_at"], out, wide=wide)


def print_forced(r: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    for item in r.get("items", []):
        print(f"{item['id']}: {item['bundle_ref']} forced through locks and windows", file=out)


def confirm_count(n: int, given: int | None, ask: Callable[[str], str] | None = None) -> int:
    """The typed device count: ``--confirm N``, else asked on a terminal."""
    if given is not None:
        return given
    if ask is None:
        if not sys.stdin.isatty():
            raise UsageError(
                f"force-update needs --confirm {n} (the number of devices) when not on a terminal"
            )
        ask = input
    answer = ask(
        f"This starts the update on {n} device(s) through their update locks and maintenance "
        f"windows. Type the number of devices ({n}) to go on: "
    ).strip()
    if answer != str(n):
        raise UsageError(f"not confirmed: typed {answer!r}, not {n}")
    return n


def add_gate_commands(
    add: Callable[..., argparse.ArgumentParser],
    device: Any,
    printers: dict[str, Printer],
) -> None:
    m = add("maintenance", "maintenance windows per device or group").add_subparsers(
        dest="maintenance_verb", required=True
    )
    p = add("set", "set the windows of device:ID or group:NAME", m)
    p.add_argument("target")
    p.add_argument(
        "windows", nargs="*", help="windows like 'Sat,Sun 02:00-05:00' (local time of the device)"
    )
    p.add_argument("--any-time", action="store_true", help="no windows: updates may start any time")

    def set_request(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
        if bool(a.windows) == a.any_time:
            raise UsageError("give the windows, or --any-time")
        return "maintenance.set", {"target": a.target, "windows": list(a.windows)}

    p.set_defaults(request=set_request)
    p = add("clear", "clear a target's windows: it inherits (group, then the bundle's)", m)
    p.add_argument("target")
    p.set_defaults(request=lambda a: ("maintenance.set", {"target": a.target, "clear": True}))
    p = add("list", "list the windows set at the hub", m)
    p.set_defaults(request=lambda a: ("maintenance.list", {}))

    p = add(
        "force-update",
        "start the assigned version now, through update locks and maintenance windows",
        device,
    )
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument(
        "--force-through-lock",
        action="store_true",
        required=True,
        help="required: says you mean to override what the site asked for",
    )
    p.add_argument("--confirm", type=int, metavar="N", help="the number of devices, typed")

    def force_request(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
        ids = sorted(set(a.ids))
        return "devices.force_update", {"ids": ids, "confirm": confirm_count(len(ids), a.confirm)}

    p.set_defaults(request=force_request)
    printers["maintenance.set"] = print_windows_set
    printers["maintenance.list"] = print_windows
    printers["devices.force_update"] = print_forced
