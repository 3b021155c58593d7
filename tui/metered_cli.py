"""``signalbeam device metered set|clear ID`` and ``signalbeam group metered set|clear NAME``
(and ``signalbeam metered list``): a data budget for a device's link, like ``100KB/day``.

Kept apart from ``tui/cli.py`` (one call to ``add_metered_commands`` there). The hub
validates the budget (``protocol.metered``) and sends it in the device's desired document;
the agent paces its traffic by it (docs/sync.md "Metered links").
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TextIO

from protocol.metered import format_budget
from tui.output import table

Printer = Callable[..., None]


def print_budget_set(r: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    budget = r.get("budget")
    what = (
        "inherited (group's, else the agent's config)" if budget is None else format_budget(budget)
    )
    change = "set" if r.get("changed") else "unchanged"
    print(f"{r['target']}: data budget {change}: {what}", file=out)
    devices = r.get("devices") or []
    if devices:
        print(f"desired state re-sent to {len(devices)} device(s)", file=out)


def print_budgets(r: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    rows = [
        {
            "target": f"{i['target_kind']}:{i['target']}",
            "budget": format_budget(i["budget"]),
            "set_by": i.get("set_by"),
            "set_at": i.get("set_at"),
        }
        for i in r.get("items", [])
    ]
    table(rows, ["target", "budget", "set_by", "set_at"], out, wide=wide)


def add_metered_commands(
    add: Callable[..., argparse.ArgumentParser],
    device: Any,
    group: Any,
    printers: dict[str, Printer],
) -> None:
    for parent, kind, what in ((device, "device", "ID"), (group, "group", "NAME")):
        m = add("metered", f"the data budget of a {kind}'s link", parent).add_subparsers(
            dest=f"{kind}_metered_verb", required=True
        )
        p = add("set", f"set the data budget of {kind} {what}", m)
        p.add_argument("target", metavar=what)
        p.add_argument(
            "--budget",
            required=True,
            help="bytes per day, week or month on the link, like 100KB/day (KB = 1000 B)",
        )
        p.set_defaults(
            request=lambda a, k=kind: (
                "metered.set",
                {"target": f"{k}:{a.target}", "budget": a.budget},
            )
        )
        p = add("clear", f"clear the budget of {kind} {what}: it inherits", m)
        p.add_argument("target", metavar=what)
        p.set_defaults(
            request=lambda a, k=kind: ("metered.set", {"target": f"{k}:{a.target}", "clear": True})
        )
    printers["metered.set"] = print_budget_set
    printers["metered.list"] = print_budgets
