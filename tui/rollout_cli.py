"""``signalbeam rollout start|status|list|pause|resume|abort`` (docs/rollouts.md).

Kept apart from ``tui/cli.py`` so the rollout verbs are one block there (one call to
``add_rollout_commands``). ``rollout status ID --watch`` is the one verb that makes more
than one request: it polls ``rollouts.get`` once a second and prints a line whenever the
rollout moved, until it is done, paused (it needs an operator then), or ``--watch-timeout``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any, TextIO

from tui.cliutil import api_error, output_format, skip_websocket_client
from tui.errors import EXIT_HUB, EXIT_USAGE
from tui.models import rollout_fields as fields
from tui.output import human_duration, table

POLL = 1.0
WATCH_TIMEOUT = 600.0
STOP_STATES = ("succeeded", "failed", "aborted", "paused")
Printer = Callable[..., None]


def _cli_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from a parser of ``tui.models.rollout_fields``: its message, not
    argparse's generic "invalid value", is what the operator reads."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except fields.FieldError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = parse.__name__
    return convert


percent = _cli_type(fields.percent)
share = _cli_type(fields.share)
steps = _cli_type(fields.steps)
bake = _cli_type(fields.bake)


# --- output ------------------------------------------------------------------------------
def counts_line(r: dict[str, Any]) -> str:
    c = r.get("counts") or {}
    line = (
        f"pending {c.get('Pending', 0)} · updating {c.get('Updating', 0)} · "
        f"succeeded {c.get('Succeeded', 0)} · failed {c.get('Failed', 0)}"
    )
    if r.get("offline"):
        line += f" · offline {r['offline']}"
    return line


def headline(r: dict[str, Any]) -> str:
    return f"{r['id']}  {r['bundle']}@{r['version']} -> {r['target']}  [{r['state']}]"


def phase_line(r: dict[str, Any]) -> str:
    """``phase 2 of 4 · steps 1%,10%,50%,100% · bake 10m · max failures 2% (20 of 1000)``:
    every number as the hub sent it (phases count from 1; the allowed failures are the
    hub's own computation)."""
    n = r.get("phase_count") or len(r.get("phases") or [])
    phase = "not started" if r.get("phase") is None else f"{r['phase']} of {n}"
    line = f"phase {phase} · steps {r.get('steps', '100%')}"
    if r.get("bake"):
        line += f" · bake {human_duration(float(r['bake']))}"
    limit = r.get("max_failures", 0)
    line += f" · max failures {limit}"
    if isinstance(limit, str) and limit.endswith("%"):
        line += f" ({r.get('max_failures_allowed', 0)} of {r.get('total', 0)})"
    return line


def phase_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per phase: its progress, failures against what it allows, bake left."""
    return [
        {
            "phase": p["number"],
            "devices": p["size"],
            "state": p["state"],
            "done": f"{p['done']}/{p['size']}",
            "failed": f"{p['failed']} (max {p['max_failures']})",
            "bake_left": human_duration(p["bake_left"]) if p["state"] == "baking" else "-",
        }
        for p in r.get("phases") or []
    ]


def print_rollout(r: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    print(headline(r), file=out)
    if r.get("reason"):
        print(f"  {r['reason']}", file=out)
    print(f"  {phase_line(r)}", file=out)
    print(f"  {counts_line(r)}", file=out)
    if "restored" in r:
        print(f"  restored: {', '.join(r['restored']) or 'nothing'}", file=out)
    if len(r.get("phases") or []) > 1:
        print(file=out)
        table(
            phase_rows(r), ["phase", "devices", "state", "done", "failed", "bake_left"], out,
            wide=wide,
        )  # fmt: skip
    devices = r.get("devices")
    if devices is not None:
        print(file=out)
        rows = [{**d, "online": "yes" if d["online"] else "OFFLINE"} for d in devices]
        table(rows, ["device", "phase", "state", "online", "reason"], out, wide=wide)
        if r.get("devices_cursor"):
            print(f"(more devices: --cursor {r['devices_cursor']})", file=out)


def print_list(result: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    rows = [
        {
            "id": r["id"],
            "bundle": f"{r['bundle']}@{r['version']}",
            "target": r["target"],
            "state": r["state"],
            "phase": "-" if r.get("phase") is None else f"{r['phase']}/{r.get('phase_count')}",
            "progress": f"{r['counts']['Succeeded'] + r['counts']['Failed']}/{r['total']}",
            "failed": r["counts"]["Failed"],
            "created_at": r["created_at"],
        }
        for r in result["items"]
    ]
    table(
        rows,
        ["id", "bundle", "target", "state", "phase", "progress", "failed", "created_at"],
        out,
        wide=wide,
    )
    if result.get("next_cursor"):
        print(f"(more: --cursor {result['next_cursor']})", file=out)


# --- parser ------------------------------------------------------------------------------
class _Watch(argparse.Action):
    """``--watch`` makes ``status`` a verb that runs itself (many requests): tui.cli's
    ``run`` calls ``args.offline`` for those instead of sending one request."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        namespace.watch = True
        namespace.offline = cmd_watch


def add_rollout_commands(
    add: Callable[..., argparse.ArgumentParser], printers: dict[str, Printer]
) -> None:
    """Add the ``rollout`` verb with ``add`` (tui.cli's helper) and its printers."""
    group = add("rollout", "roll a bundle version out to devices, phase by phase").add_subparsers(
        dest="rollout_verb", required=True
    )
    p = add("start", "start a rollout of NAME@VERSION to a target", group)
    p.add_argument("bundle", help="NAME@VERSION")
    p.add_argument("--target", required=True, help="device:ID, group:NAME or tag:NAME")
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--phases",
        type=steps,
        help="cumulative steps, percentages or counts, e.g. 1%%,10%%,50%%,100%% or 5,50,100%% "
        "(devices left after the last step are one more phase)",
    )
    how.add_argument(
        "--canary", type=percent, help="first phase, e.g. 10%% (the phases 10%%,100%%)"
    )
    p.add_argument(
        "--bake",
        type=bake,
        help="how long a complete phase must stay healthy before the next starts (e.g. 10m)",
    )
    p.add_argument(
        "--max-failures",
        type=share,
        help="failures tolerated, a count (2) or a percentage of each phase and of the whole "
        "rollout (2%%); more pause the rollout (default 0)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="roll out a version the fleet's devices would refuse (unsigned; docs/security.md)",
    )
    p.set_defaults(
        request=lambda a: (
            "rollouts.start",
            {
                k: v
                for k, v in {
                    "bundle": a.bundle,
                    "target": a.target,
                    "canary_percent": a.canary,
                    "phases": a.phases,
                    "bake": a.bake,
                    "max_failures": a.max_failures,
                    "force": a.force or None,
                }.items()
                if v is not None
            },
        )
    )
    p = add("status", "a rollout and its devices (--watch: follow it until done)", group)
    p.add_argument("id")
    p.add_argument(
        "--watch",
        action=_Watch,
        nargs=0,
        help="print progress until it is done (exit 0: succeeded)",
    )
    p.add_argument(
        "--watch-timeout",
        type=float,
        default=WATCH_TIMEOUT,
        help=f"stop watching after this many seconds (default {WATCH_TIMEOUT:.0f})",
    )
    p.add_argument("--limit", type=int, help="devices per page (default 1000)")
    p.add_argument("--cursor", help="the next page of devices (printed when there is one)")
    p.set_defaults(
        request=lambda a: (
            "rollouts.get",
            {
                k: v
                for k, v in {"id": a.id, "limit": a.limit, "cursor": a.cursor}.items()
                if v is not None
            },
        )
    )
    p = add("list", "rollouts, newest first", group)
    p.add_argument("--state", choices=["running", "paused", "succeeded", "failed", "aborted"])
    p.add_argument("--limit", type=int)
    p.add_argument("--cursor")
    p.set_defaults(
        request=lambda a: (
            "rollouts.list",
            {
                k: v
                for k, v in {"state": a.state, "limit": a.limit, "cursor": a.cursor}.items()
                if v is not None
            },
        )
    )
    for name, text in (
        ("pause", "stop starting new phases (devices already updating go on)"),
        ("resume", "go on after a pause (failures so far are accepted; the phase bakes again)"),
        ("abort", "stop for good and give the devices back their previous assignment"),
    ):
        p = add(name, text, group)
        p.add_argument("id")
        p.set_defaults(request=lambda a, v=f"rollouts.{name}": (v, {"id": a.id}))
    for verb in ("start", "get", "pause", "resume", "abort"):
        printers[f"rollouts.{verb}"] = print_rollout
    printers["rollouts.list"] = print_list


# --- watching ----------------------------------------------------------------------------
async def watch(
    client: Any, rollout_id: str, limit: float, out: TextIO, as_json: bool
) -> dict[str, Any]:
    """Poll until the rollout stops moving on its own or ``limit`` seconds pass; prints a
    line (or a JSON line) at each change. Returns the last state seen."""
    import asyncio

    deadline = time.monotonic() + limit
    last: tuple[Any, ...] | None = None
    while True:
        r = await client.call("rollouts.get", {"id": rollout_id})
        phases = [(p["number"], p["state"]) for p in r.get("phases") or []]
        key = (r["state"], json.dumps(r["counts"], sort_keys=True), r.get("offline"), phases)
        if key != last:
            last = key
            if as_json:
                print(json.dumps({k: v for k, v in r.items() if k != "devices"}), file=out)
            else:
                stamp = time.strftime("%H:%M:%S")
                where = "" if r.get("phase") is None else f"phase {r['phase']}/{len(phases)} "
                now = next((s for n, s in phases if n == r.get("phase")), "")
                where += f"{now} " if now else ""
                print(f"{stamp}  [{r['state']}]  {where}{counts_line(r)}", file=out)
            out.flush()
        if r["state"] in STOP_STATES or time.monotonic() >= deadline:
            return r
        await asyncio.sleep(min(POLL, max(0.0, deadline - time.monotonic())))


def cmd_watch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``rollout status ID --watch``: exit 0 when the rollout succeeded, 1 when it failed,
    was aborted, paused, or was still going at ``--watch-timeout``."""
    import asyncio

    from tui.config import ConfigError, from_args

    fmt = output_format(args)
    as_json = fmt in ("json", "yaml")
    try:
        settings = from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    skip_websocket_client(settings.hub)
    from tui.client import ApiError, HubClient

    async def go() -> dict[str, Any]:
        async with HubClient.from_settings(settings) as client:
            return await watch(client, args.id, max(0.0, args.watch_timeout), out, as_json)

    try:
        r = asyncio.run(go())
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how one stops watching
    except ApiError as exc:
        return api_error(exc, fmt, out, err)
    if not as_json:
        print(file=out)
        print_rollout(r, out, wide=fmt == "wide")
    if r["state"] == "succeeded":
        return 0
    if r["state"] not in STOP_STATES:
        print(f"rollout {args.id} still {r['state']} after {args.watch_timeout:g}s", file=err)
    return EXIT_HUB
