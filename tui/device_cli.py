"""``signalbeam device logs|restart|reconcile|status|approve-reenroll`` (remote commands).

Kept apart from ``tui/cli.py`` (one call to ``add_device_commands`` there). The hub forwards
each command through the device's leaf link (``devices.logs`` etc., docs/operator-api.md);
an offline device answers at once with ``device offline (last seen ...)``.

``--wait`` is how long the hub waits for the device (default 4 s); the CLI's own request
timeout is raised to outlast it unless ``--timeout`` is given.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, TextIO

Printer = Callable[[dict[str, Any], TextIO], None]
DEFAULT_WAIT = 4


def _with_wait(args: argparse.Namespace, verb: str, body: dict[str, Any]) -> tuple[str, Any]:
    wait = args.wait
    if getattr(args, "timeout", None) is None:
        args.timeout = wait + 3  # the hub answers (even "timed out") before the CLI gives up
    return verb, {**body, "timeout": wait}


def print_logs(r: dict[str, Any], out: TextIO) -> None:
    for line in r["result"].get("lines", []):
        print(line, file=out)
    if r["result"].get("truncated"):
        print("(older lines left out: the reply size limit)", file=out)


def print_restart(r: dict[str, Any], out: TextIO) -> None:
    print(f"restarted {r['result'].get('container')} on {r['id']}", file=out)


def print_reconcile(r: dict[str, Any], out: TextIO) -> None:
    print(
        f"reconcile triggered on {r['id']} (generation {r['result'].get('generation')})", file=out
    )


def print_status(r: dict[str, Any], out: TextIO) -> None:
    print(json.dumps(r["result"], indent=2, sort_keys=True), file=out)


def print_approved(r: dict[str, Any], out: TextIO) -> None:
    what = "approved" if r.get("changed") else "was already approved"
    print(f"re-enrollment of {r['id']} {what}; it may enroll once more", file=out)


def add_device_commands(
    add: Callable[..., argparse.ArgumentParser], device: Any, printers: dict[str, Printer]
) -> None:
    """Add the remote-command verbs under ``signalbeam device``."""

    def waiting(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--wait", type=int, default=DEFAULT_WAIT, help="seconds to wait for the device (1-60)"
        )

    p = add("logs", "tail a container's log on the device", device)
    p.add_argument("id")
    p.add_argument("container", help="container name, service name or id prefix")
    p.add_argument("--tail", type=int, default=100, help="lines (1-5000, default 100)")
    waiting(p)
    p.set_defaults(
        request=lambda a: _with_wait(
            a, "devices.logs", {"id": a.id, "container": a.container, "tail": a.tail}
        )
    )
    p = add("restart", "restart a container on the device", device)
    p.add_argument("id")
    p.add_argument("container")
    waiting(p)
    p.set_defaults(
        request=lambda a: _with_wait(a, "devices.restart", {"id": a.id, "container": a.container})
    )
    p = add("reconcile", "make the device reconcile now", device)
    p.add_argument("id")
    waiting(p)
    p.set_defaults(request=lambda a: _with_wait(a, "devices.reconcile", {"id": a.id}))
    p = add("status", "the device agent's own status (live, over its link)", device)
    p.add_argument("id")
    waiting(p)
    p.set_defaults(request=lambda a: _with_wait(a, "devices.status", {"id": a.id}))
    p = add("approve-reenroll", "let an enrolled device id enroll once more", device)
    p.add_argument("id")
    p.set_defaults(request=lambda a: ("devices.approve_reenroll", {"id": a.id}))

    printers["devices.logs"] = print_logs
    printers["devices.restart"] = print_restart
    printers["devices.reconcile"] = print_reconcile
    printers["devices.status"] = print_status
    printers["devices.approve_reenroll"] = print_approved
