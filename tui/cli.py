"""``signalbeam``: the operator CLI. Each verb is one operator API request.

Human tables by default (ages and sizes for people), ``-o json|yaml|wide`` (``--json`` as
``-o json``) for scripts; a non-zero exit and the API's message on errors (1: the hub refused
or was unreachable, 2: bad usage or config).

Startup cost is paid per verb: this module loads argparse and the formatting only. The NATS
client (and aiohttp under it) is imported when a verb sends a request, YAML when a bundle is
read or ``-o yaml`` printed, Textual for ``tui`` (bench/bench_cli.py measures it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from sbutil.cli import Parser, add_version, quiet_pipe
from tui import cliutil
from tui.bundle_cli import add_assign_commands, add_bundle_commands
from tui.cliutil import api_error, duration, output_format, request_body
from tui.device_cli import add_device_commands
from tui.errors import EXIT_USAGE, ApiError, TuiError
from tui.gates_cli import add_gate_commands
from tui.metered_cli import add_metered_commands
from tui.output import fields, metric_value, show_device, structured, table
from tui.rollout_cli import add_rollout_commands
from tui.signing_cli import add_signing_commands
from tui.stream import add_follow, cmd_follow_events
from tui.vars_cli import add_vars_commands

# Options that take a value: what follows them is no verb (see ``_has_verb``).
VALUE_OPTIONS = (
    "--hub",
    "--api-key",
    "--timeout",
    "--ca-file",
    "--log-format",
    "--log-level",
    "-o",
    "--output",
)

# --- output ------------------------------------------------------------------------------
# A printer writes a verb's result for people: printer(result, out, wide=bool).
Printer = Callable[..., None]


def _paged(result: dict[str, Any], columns: Sequence[str], out: TextIO, wide: bool = False) -> None:
    table(result["items"], columns, out, wide=wide)
    if result.get("next_cursor"):
        print(f"(more: --cursor {result['next_cursor']})", file=out)


def print_metrics(result: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    rows = [
        {
            **r,
            **{k: metric_value(str(r.get("name", "")), r.get(k)) for k in ("min", "avg", "max")},
        }
        for r in result["items"]
    ]
    table(rows, ["name", "ts", "min", "avg", "max"], out, wide=wide)


def print_events(result: dict[str, Any], out: TextIO, wide: bool = False) -> None:
    cols = ["ts", "device_id", "kind", "message"]
    if wide:
        cols = ["id", "ts", "device_id", "severity", "kind", "seq", "message"]
    _paged(result, cols, out, wide)


def _cols(narrow: Sequence[str], extra: Sequence[str]) -> Callable[[bool], list[str]]:
    return lambda wide: [*narrow, *extra] if wide else list(narrow)


_DEVICE_COLS = _cols(
    ["id", "tenant", "hostname", "status", "last_seen", "tags", "groups"],
    ["arch", "os", "engine", "agent_version"],
)

PRINTERS: dict[str, Printer] = {
    "devices.list": lambda r, o, wide=False: _paged(r, _DEVICE_COLS(wide), o, wide),
    "devices.get": show_device,
    "groups.list": lambda r, o, wide=False: table(
        r["items"], ["name", "members", "description"], o, wide=wide
    ),
    "events.list": print_events,
    "metrics.get": print_metrics,
    "tokens.list": lambda r, o, wide=False: table(
        r["items"], ["id", "tenant", "expires_at", "uses", "max_uses", "revoked"], o, wide=wide
    ),
    "keys.list": lambda r, o, wide=False: table(
        r["items"], ["id", "name", "role", "created_at", "revoked"], o, wide=wide
    ),
}


def _print_created_secret(kind: str, secret_field: str) -> Printer:
    def printer(r: dict[str, Any], out: TextIO, wide: bool = False) -> None:
        fields(r, out, skip=(secret_field,), wide=wide)
        print(f"\n{kind} (shown only now; store it safely):\n  {r[secret_field]}", file=out)

    return printer


PRINTERS["tokens.create"] = _print_created_secret("enrollment token", "token")
PRINTERS["keys.create"] = _print_created_secret("API key", "key")


# --- parser ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    # SUPPRESS: the options work before or after the verb without one overwriting the other.
    common.add_argument(
        "--hub",
        default=argparse.SUPPRESS,
        help="hub NATS URL, or several comma-separated: a cluster's nodes ($SIGNALBEAM_HUB)",
    )
    common.add_argument(
        "--api-key", default=argparse.SUPPRESS, help="operator API key ($SIGNALBEAM_API_KEY)"
    )
    common.add_argument(
        "--timeout", type=float, default=argparse.SUPPRESS, help="seconds to wait for the hub"
    )
    common.add_argument(
        "--ca-file",
        default=argparse.SUPPRESS,
        help="the TLS hub's CA or self-signed certificate ($SIGNALBEAM_CA_FILE)",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON output (-o json)"
    )
    common.add_argument(
        "-o",
        "--output",
        choices=["json", "yaml", "wide"],
        default=argparse.SUPPRESS,
        help="json or yaml: the API's result as it is; wide: more columns, exact times",
    )
    # As sbutil.logsetup.add_logging_args, but SUPPRESSed for the same reason as above.
    common.add_argument("--log-format", choices=["text", "json"], default=argparse.SUPPRESS)
    common.add_argument("--log-level", default=argparse.SUPPRESS, help="default WARNING")

    parser = Parser(prog="signalbeam", description="SignalBeam Edge operator CLI", parents=[common])
    add_version(parser)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def add(name: str, help_text: str, parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_text, parents=[common])
        return p

    p = add("devices", "list devices")
    p.add_argument("--tag")
    p.add_argument("--group")
    p.add_argument("--status")
    p.add_argument("--text", help="substring of id or hostname")
    p.add_argument("--all", action="store_true", help="include decommissioned devices")
    p.add_argument("--limit", type=int)
    p.add_argument("--cursor")
    p.set_defaults(
        request=lambda a: (
            "devices.list",
            request_body(
                tag=a.tag,
                group=a.group,
                status=a.status,
                text=a.text,
                limit=a.limit,
                cursor=a.cursor,
                include_decommissioned=a.all or None,
            ),
        )
    )

    device = add("device", "one device").add_subparsers(dest="device_verb", required=True)
    p = add("show", "a device's facts, tags, groups, desired and reported state", device)
    p.add_argument("id")
    p.set_defaults(request=lambda a: ("devices.get", {"id": a.id}))
    p = add("decommission", "retire a device (it gets no desired bundle)", device)
    p.add_argument("id")
    p.set_defaults(request=lambda a: ("devices.decommission", {"id": a.id}))
    add_device_commands(add, device, PRINTERS)  # logs/restart/reconcile... (tui/device_cli.py)
    add_gate_commands(add, device, PRINTERS)  # maintenance, force-update (tui/gates_cli.py)
    add_vars_commands(add, PRINTERS)  # vars, secrets (tui/vars_cli.py)

    for name, verb in (("tag", "devices.tag"), ("untag", "devices.untag")):
        p = add(name, f"{name} a device")
        p.add_argument("id")
        p.add_argument("tag")
        p.set_defaults(request=lambda a, v=verb: (v, {"id": a.id, "tag": a.tag}))

    group = add("group", "device groups").add_subparsers(dest="group_verb", required=True)
    p = add("create", "create a group", group)
    p.add_argument("name")
    p.add_argument("--description")
    p.set_defaults(
        request=lambda a: ("groups.create", request_body(name=a.name, description=a.description))
    )
    p = add("delete", "delete a group", group)
    p.add_argument("name")
    p.set_defaults(request=lambda a: ("groups.delete", {"name": a.name}))
    for name, verb in (("add", "groups.add"), ("remove", "groups.remove")):
        p = add(name, f"{name} a device", group)
        p.add_argument("name")
        p.add_argument("device")
        p.set_defaults(request=lambda a, v=verb: (v, {"name": a.name, "device": a.device}))
    p = add("list", "list groups", group)
    p.set_defaults(request=lambda a: ("groups.list", {}))
    add_metered_commands(add, device, group, PRINTERS)  # device|group metered (tui/metered_cli)
    p = add("metered", "data budgets set at the hub (metered links)")
    p.set_defaults(request=lambda a: ("metered.list", {}))

    bundle = add_bundle_commands(add, PRINTERS)  # validate, push, list... (tui/bundle_cli.py)
    add_signing_commands(add, bundle, PRINTERS, send, show)  # keys ..., bundle sign|resign

    add_assign_commands(add, PRINTERS)  # assign, unassign, assignments (tui/bundle_cli.py)

    p = add("events", "the event log, newest first (--follow: oldest first, then live)")
    p.add_argument("--device")
    p.add_argument("--limit", type=int)
    p.add_argument("--cursor")
    add_follow(p, "print new events as they arrive (Ctrl-C ends)", cmd_follow_events)
    p.set_defaults(
        request=lambda a: (
            "events.list",
            request_body(device=a.device, limit=a.limit, cursor=a.cursor),
        )
    )

    p = add("metrics", "a device's metric rollups")
    p.add_argument("device")
    p.add_argument("--resolution", choices=["1m", "1h"])
    p.add_argument("--since", type=int, help="unix seconds")
    p.add_argument("--until", type=int, help="unix seconds")
    p.add_argument("--name", help="one metric, e.g. cpu")
    p.set_defaults(
        request=lambda a: (
            "metrics.get",
            request_body(
                device=a.device, resolution=a.resolution, since=a.since, until=a.until, name=a.name
            ),
        )
    )

    token = add("token", "device enrollment tokens").add_subparsers(
        dest="token_verb", required=True
    )
    p = add("create", "create an enrollment token (shown once)", token)
    p.add_argument("--tenant", required=True)
    p.add_argument("--expires", type=duration, help="e.g. 24h (default 24h)")
    p.add_argument("--uses", type=int, help="how many devices may enroll with it (default 1)")
    p.set_defaults(
        request=lambda a: (
            "tokens.create",
            request_body(tenant=a.tenant, expires_in=a.expires, max_uses=a.uses),
        )
    )
    p = add("list", "list enrollment tokens", token)
    p.set_defaults(request=lambda a: ("tokens.list", {}))
    p = add("revoke", "revoke an enrollment token", token)
    p.add_argument("id")
    p.set_defaults(request=lambda a: ("tokens.revoke", {"id": a.id}))

    # `api-key`: operator API keys. Its old name `key` sat one letter from `keys`, the
    # bundle-signing keys (now `signing-key`); both old names still work and say the new one.
    for name, deprecated in (("api-key", False), ("key", True)):
        text = "old name of api-key (deprecated)" if deprecated else "operator API keys"
        key = add(name, text).add_subparsers(dest="key_verb", required=True)
        p = add("create", "create an API key (shown once)", key)
        p.add_argument("name")
        p.add_argument("--role", choices=["admin", "readonly"], default="readonly")
        p.set_defaults(request=lambda a: ("keys.create", {"name": a.name, "role": a.role}))
        p = add("list", "list API keys", key)
        p.set_defaults(request=lambda a: ("keys.list", {}))
        p = add("revoke", "revoke an API key", key)
        p.add_argument("id")
        p.set_defaults(request=lambda a: ("keys.revoke", {"id": a.id}))
        if deprecated:
            for verb, verb_parser in key.choices.items():
                verb_parser.set_defaults(deprecated=(f"{name} {verb}", f"api-key {verb}"))

    add_rollout_commands(add, PRINTERS)  # signalbeam rollout ... (tui/rollout_cli.py)

    p = add("tui", "the interactive terminal UI (also bare `signalbeam` in a terminal)")
    p.add_argument(
        "--read-only",
        action="store_true",
        help="browse only: write actions are hidden (also automatic with a readonly key)",
    )
    p.set_defaults(offline=cmd_tui)
    return parser


# --- verbs that need more than one request line --------------------------------------------
def cmd_tui(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    # Imported only here: the other verbs must not pay for (or need) Textual.
    try:
        from tui.app import main as tui_main
    except ImportError as exc:
        print(f"error: the terminal UI is unavailable: {exc}", file=err)
        return EXIT_USAGE
    result: int = tui_main(args)
    return result


# --- running -----------------------------------------------------------------------------
def send(args: argparse.Namespace, verb: str, body: dict[str, Any]) -> dict[str, Any]:
    """One request to the hub named by the args (flags, environment, config file)."""
    # Imported here, not at the top: the NATS client and aiohttp under it are most of the
    # CLI's start-up cost, and `--help`, `bundle validate` and `tui` never send a request.
    import asyncio

    from tui.config import from_args

    settings = from_args(args)
    cliutil.skip_websocket_client(settings.hub)
    from tui.client import HubClient

    async def go() -> dict[str, Any]:
        async with HubClient.from_settings(settings) as client:
            return await client.call(verb, body)

    return asyncio.run(go())


def report_error(exc: Exception, args: argparse.Namespace, out: TextIO, err: TextIO) -> int | None:
    """The exit code after printing a failed verb's error; None if ``exc`` is no error of
    ours (a bug: let it show its traceback)."""
    if isinstance(exc, ApiError):  # the protocol's error shape, on stdout for -o json|yaml
        return api_error(exc, output_format(args), out, err)
    if isinstance(exc, TuiError):  # ours: the class says the exit code (tui/errors.py)
        print(f"error: {exc}", file=err)
        return exc.exit_code
    # Other packages' errors, translated here. Imported only when already loaded: an
    # offline verb that never read a bundle must not pay for importing `bundles`.
    if "bundles" in sys.modules:
        from bundles.errors import BundleError, BundleInvalid

        # A bundle file that cannot be pushed is bad input: exit 2, as `bundle validate`.
        if isinstance(exc, BundleInvalid):
            for e in exc.errors:
                line = f":{e.line}" if e.line is not None else ""
                print(f"{args.file}{line}: {e.path}: {e.message}", file=err)
            print("bundle not pushed: fix the errors above", file=err)
            return EXIT_USAGE
        if isinstance(exc, BundleError):
            print(f"error: {exc}", file=err)
            return EXIT_USAGE
    if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
        print(f"error: {exc}", file=err)  # the bundle file could not be read
        return EXIT_USAGE
    return None


def show(verb: str, result: dict[str, Any], args: argparse.Namespace, out: TextIO) -> None:
    fmt = output_format(args)
    if fmt in ("json", "yaml"):
        structured(result, fmt, out)
    elif verb in PRINTERS:
        PRINTERS[verb](result, out, wide=fmt == "wide")
    else:
        fields(result, out, wide=fmt == "wide")


def run(
    argv: Sequence[str] | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    *,
    configure_logging: bool = False,
) -> int:
    """Parse and run one command; ``main`` (the entry point) also sets up logging, tests
    calling ``run`` in-process keep their own."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not _has_verb(parser, argv):
        if out.isatty() and sys.stdin.isatty():
            argv.append("tui")  # bare `signalbeam` (maybe with --hub ...) in a terminal
        else:
            # A script or a pipe gets the verbs, not a UI it cannot drive.
            parser.print_help(out)
            return EXIT_USAGE
    args = parser.parse_args(argv)
    old_new = getattr(args, "deprecated", None)
    if old_new is not None:
        # stderr: a script reading stdout (-o json) gets the same output under the old name.
        old, new = old_new
        print(f"signalbeam {old} is deprecated: use signalbeam {new}", file=err)
    if configure_logging:
        from sbutil.logsetup import setup_logging

        # Logs go to stderr and stay quiet by default: stdout is the command's output.
        setup_logging(getattr(args, "log_format", "text"), getattr(args, "log_level", "WARNING"))
    try:
        if hasattr(args, "offline"):
            code: int = args.offline(args, out, err)
            return code
        verb, body = args.request(args)
        result = send(args, verb, body)
        show(verb, result, args, out)
    except Exception as exc:
        handled = report_error(exc, args, out, err)
        if handled is None:
            raise
        return handled
    return 0


def _has_verb(parser: argparse.ArgumentParser, argv: Sequence[str]) -> bool:
    """Whether argv names a verb (a known one or not) or asks for help or the version; the
    connection options and their values alone do not."""
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in ("-h", "--help", "--version"):
            return True
        elif a in VALUE_OPTIONS:
            skip = True  # its value follows
        elif not a.startswith("-"):
            return True  # a verb, or a typo the parser answers with "did you mean"
    return False


def main(argv: Sequence[str] | None = None) -> int:
    cliutil.LEAN_IMPORTS = True  # this process is the command: see skip_websocket_client
    return quiet_pipe(lambda: run(argv, configure_logging=True))


if __name__ == "__main__":
    sys.exit(main())
