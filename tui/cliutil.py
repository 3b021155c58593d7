"""Pieces every ``signalbeam`` verb module shares (tui/cli.py, device_cli, rollout_cli,
stream): argument types, the output choice, the error printer. Kept apart so they import it
without importing tui/cli.py (which imports them), and cheap: argparse, json, re."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, TextIO

from tui.errors import EXIT_HUB
from tui.output import structured

DURATION_RE = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Set by the `signalbeam` entry point (tui.cli.main) only: it changes what the whole process
# may import, which an in-process caller (a test, the TUI) must not have decided for it.
LEAN_IMPORTS = False

# A verb builds (api verb, body) from the parsed args; None for the offline ones.
Request = tuple[str, dict[str, Any]]


def request_body(**values: Any) -> dict[str, Any]:
    """A request body without the options left unset (the hub applies its defaults)."""
    return {k: v for k, v in values.items() if v is not None}


def skip_websocket_client(url: str) -> None:
    """Call before the NATS client is first imported. nats-py imports aiohttp only to offer
    ws:// hubs (the import is optional there): 0.3 s of a hub verb's 0.5 s start-up CPU and
    11 MiB of its 37 MiB (bench/bench_cli.py). The CLI talks nats:// or tls://, so its entry
    point lets nats-py find no aiohttp unless a hub URL (of several, comma-separated) is a
    websocket one."""
    if (
        LEAN_IMPORTS
        and not any(u.strip().startswith(("ws://", "wss://")) for u in url.split(","))
        and "aiohttp" not in sys.modules
        and "nats" not in sys.modules
    ):
        sys.modules["aiohttp"] = None  # type: ignore[assignment]  # import raises ImportError


def duration(text: str) -> int:
    m = DURATION_RE.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 24h or 7d")
    return int(m.group(1)) * UNITS[m.group(2)]


def output_format(args: argparse.Namespace) -> str:
    """``text`` (the default), ``wide``, ``json`` or ``yaml``; ``--json`` is ``-o json``."""
    fmt = getattr(args, "output", None)
    if fmt:
        return str(fmt)
    return "json" if getattr(args, "json", False) else "text"


def api_error(exc: Any, fmt: str, out: TextIO, err: TextIO) -> int:
    """An ``ApiError``: ``{"error": …}`` on stdout for -o json|yaml, one line on stderr (and
    a bundle's problems, one a line) for people."""
    if fmt in ("json", "yaml"):
        doc: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.field:
            doc["field"] = exc.field
        if exc.details is not None:
            doc["details"] = exc.details
        structured({"error": doc}, fmt, out)
    else:
        print(f"error: {exc} [{exc.code}]", file=err)
        if isinstance(exc.details, list):
            for d in exc.details:
                if isinstance(d, dict) and "path" in d:
                    print(f"  {d['path']}: {d.get('message')}", file=err)
    return EXIT_HUB
