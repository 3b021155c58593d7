"""``signalbeam device logs|restart|reconcile|status|approve-reenroll`` (remote commands).

Kept apart from ``tui/cli.py`` (one call to ``add_device_commands`` there). The hub forwards
each command through the device's leaf link (``devices.logs`` etc., docs/operator-api.md);
an offline device answers at once with ``device offline (last seen ...)``.

``--wait`` is how long the hub waits for the device: 5 s, and 30 s for ``restart``, which
stops the container first and so may take the engine's whole stop timeout (a process that
ignores SIGTERM is killed after 10 s), then starts it (``protocol.api.device_wait``). The
client waits that long plus a margin for the hub's answer (``tui.client.HubClient.call``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TextIO

from protocol.api import MAX_DEVICE_WAIT, RESTART_STOP_TIMEOUT, device_wait
from tui.output import show_agent_status
from tui.stream import add_follow, cmd_follow_logs

Printer = Callable[..., None]


def _with_wait(args: argparse.Namespace, verb: str, body: dict[str, Any]) -> tuple[str, Any]:
    return verb, {**body, "timeout": args.wait}


def print_logs(r: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    for line in r["result"].get("lines", []):
        print(line, file=out)
    if r["result"].get("truncated"):
        print("(older lines left out: the reply size limit)", file=out)


def print_restart(r: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    res = r["result"]
    name, service = res.get("container"), res.get("service")
    if service and service != name:
        # The bundle's service name is the one the operator typed; the engine's is longer.
        print(f"restarted {service} on {r['id']} (container {name})", file=out)
    else:
        print(f"restarted {name} on {r['id']}", file=out)


def print_reconcile(r: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    print(
        f"reconcile triggered on {r['id']} (generation {r['result'].get('generation')})", file=out
    )


def print_status(r: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    show_agent_status(r["result"], out, wide=wide)


def print_approved(r: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    what = "approved" if r.get("changed") else "was already approved"
    print(f"re-enrollment of {r['id']} {what}; it may enroll once more", file=out)


def add_device_commands(
    add: Callable[..., argparse.ArgumentParser], device: Any, printers: dict[str, Printer]
) -> None:
    """Add the remote-command verbs under ``signalbeam device``."""

    def waiting(p: argparse.ArgumentParser, verb: str, why: str = "") -> None:
        p.add_argument(
            "--wait",
            type=int,
            default=device_wait(verb),
            metavar="SECONDS",
            help=f"how long the hub waits for the device (1-{MAX_DEVICE_WAIT}, default "
            f"{device_wait(verb)}{why})",
        )

    p = add("logs", "tail a container's log on the device (-f: follow it)", device)
    p.add_argument("id")
    p.add_argument("container", help="container name, service name or id prefix")
    p.add_argument("--tail", type=int, default=100, help="lines (1-5000, default 100)")
    waiting(p, "logs")
    add_follow(p, "print new lines as the container writes them (Ctrl-C ends)", cmd_follow_logs)
    p.set_defaults(
        request=lambda a: _with_wait(
            a, "devices.logs", {"id": a.id, "container": a.container, "tail": a.tail}
        )
    )
    p = add("restart", "restart a container on the device (stop, then start)", device)
    p.add_argument("id")
    p.add_argument("container")
    waiting(p, "restart", f": the stop alone may take {RESTART_STOP_TIMEOUT} s")
    p.set_defaults(
        request=lambda a: _with_wait(a, "devices.restart", {"id": a.id, "container": a.container})
    )
    p = add("reconcile", "make the device reconcile now", device)
    p.add_argument("id")
    waiting(p, "reconcile")
    p.set_defaults(request=lambda a: _with_wait(a, "devices.reconcile", {"id": a.id}))
    p = add("status", "the device agent's own status (live, over its link)", device)
    p.add_argument("id")
    waiting(p, "status")
    p.set_defaults(request=lambda a: _with_wait(a, "devices.status", {"id": a.id}))
    p = add("approve-reenroll", "let an enrolled device id enroll once more", device)
    p.add_argument("id")
    p.set_defaults(request=lambda a: ("devices.approve_reenroll", {"id": a.id}))

    printers["devices.logs"] = print_logs
    printers["devices.restart"] = print_restart
    printers["devices.reconcile"] = print_reconcile
    printers["devices.status"] = print_status
    printers["devices.approve_reenroll"] = print_approved
