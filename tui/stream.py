"""The verbs that stream: ``events --follow`` and ``device logs -f`` (``rollout status --watch``
lives with the rollout verbs).

Both poll: the operator API has no push for events or log lines, and a poll every couple of
seconds is what a person watching can read. Each run is bounded (``--follow-for``, default
1 h, said on stderr when reached) and Ctrl-C ends it quietly with exit 0, the usual way to
stop following. Text lines carry the wall-clock time, not an age (an age printed once would
be stale a second later); ``-o json`` prints one JSON object a line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

from tui.cliutil import api_error, duration, output_format, skip_websocket_client
from tui.errors import EXIT_USAGE

POLL_SECONDS = 2.0
FOLLOW_FOR = 3600.0
FIRST_EVENTS = 20  # shown before following, as `tail -f` shows the last lines
PAGE = 100
MAX_PAGES = 10  # a burst larger than this between two polls shows its newest part
Cmd = Callable[[argparse.Namespace, TextIO, TextIO], int]


# --- pure parts --------------------------------------------------------------------------
def fresh_lines(previous: Sequence[str], tail: Sequence[str]) -> list[str]:
    """The lines of a new tail that the previous tail did not have.

    The remote ``logs`` command returns the last N lines, so following means re-polling; the
    longest suffix of the previous tail that is a prefix of the new one is the overlap. No
    overlap (the log rolled past a whole tail) gives the whole tail.
    """
    for size in range(min(len(previous), len(tail)), 0, -1):
        if list(previous[-size:]) == list(tail[:size]):
            return list(tail[size:])
    return list(tail)


def newer_events(items: Sequence[dict[str, Any]], after: int) -> list[dict[str, Any]]:
    """Events with an id above ``after``, oldest first (the API lists newest first)."""
    return sorted((e for e in items if int(e["id"]) > after), key=lambda e: int(e["id"]))


def event_line(e: dict[str, Any], *, wide: bool = False) -> str:
    from tui.output import epoch

    t = epoch(e.get("ts"))
    stamp = time.strftime("%H:%M:%S", time.localtime(t)) if t is not None else str(e.get("ts"))
    parts = [stamp, str(e.get("device_id") or "hub")]
    if wide:
        parts.append(str(e.get("severity") or "-"))
    parts += [str(e.get("kind")), str(e.get("message") or "")]
    return "  ".join(parts).rstrip()


# --- the follow loop ---------------------------------------------------------------------
class _Follow(argparse.Action):
    """``--follow`` turns a one-request verb into one that runs itself: tui.cli's ``run``
    calls ``args.offline`` instead of sending a request."""

    def __init__(self, *args: Any, cmd: Cmd, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cmd = cmd

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        namespace.follow = True
        namespace.offline = self.cmd


def add_follow(p: argparse.ArgumentParser, help_text: str, cmd: Cmd) -> None:
    p.add_argument("-f", "--follow", action=_Follow, nargs=0, cmd=cmd, help=help_text)
    p.add_argument(
        "--follow-for",
        type=duration,
        default=FOLLOW_FOR,
        metavar="DURATION",
        help="stop following after this long, e.g. 10m (default 1h)",
    )


def _follow(
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    poll: Callable[[Any, bool], Awaitable[None]],
) -> int:
    """Connect once, then ``poll(client, first)`` every POLL_SECONDS until --follow-for."""
    import asyncio

    from tui.config import ConfigError, from_args

    try:
        settings = from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    skip_websocket_client(settings.hub)
    from tui.client import ApiError, HubClient

    limit = float(args.follow_for)

    async def go() -> bool:
        deadline = time.monotonic() + limit
        async with HubClient.from_settings(settings) as client:
            first = True
            while True:
                await poll(client, first)
                out.flush()
                first = False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                await asyncio.sleep(min(POLL_SECONDS, left))

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how one stops following
    except ApiError as exc:
        return api_error(exc, output_format(args), out, err)
    print(f"(stopped following after {limit:g}s; --follow-for sets how long)", file=err)
    return 0


def cmd_follow_events(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``events --follow``: the last events, oldest first, then each new one as it comes."""
    fmt = output_format(args)
    last = 0

    def show(e: dict[str, Any]) -> None:
        if fmt in ("json", "yaml"):
            print(json.dumps(e, sort_keys=True), file=out)
        else:
            print(event_line(e, wide=fmt == "wide"), file=out)

    base: dict[str, Any] = {"device": args.device} if args.device else {}

    async def poll(client: Any, first: bool) -> None:
        nonlocal last
        if first:
            r = await client.call("events.list", {**base, "limit": args.limit or FIRST_EVENTS})
            items = newer_events(r["items"], 0)
        else:
            items = []
            cursor = None
            for _ in range(MAX_PAGES):
                body = {**base, "limit": PAGE, **({"cursor": cursor} if cursor else {})}
                r = await client.call("events.list", body)
                items += newer_events(r["items"], last)
                cursor = r.get("next_cursor")
                if not cursor or any(int(e["id"]) <= last for e in r["items"]):
                    break
            items = newer_events(items, last)
        for e in items:
            show(e)
            last = max(last, int(e["id"]))

    return _follow(args, out, err, poll)


def cmd_follow_logs(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``device logs ID CONTAINER -f``: the tail, then the lines added since, polled."""
    fmt = output_format(args)
    previous: list[str] = []

    async def poll(client: Any, first: bool) -> None:
        nonlocal previous
        body = {"id": args.id, "container": args.container, "tail": args.tail}
        r = await client.call("devices.logs", {**body, "timeout": args.wait})
        tail = [str(line) for line in r["result"].get("lines", [])]
        for line in tail if first else fresh_lines(previous, tail):
            if fmt in ("json", "yaml"):
                doc = {"device": args.id, "container": r["result"].get("container"), "line": line}
                print(json.dumps(doc), file=out)
            else:
                print(line, file=out)
        previous = tail

    return _follow(args, out, err, poll)
