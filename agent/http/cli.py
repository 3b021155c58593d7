"""``signalbeam-agent token create|list|revoke``: manage local API tokens on the device.

Run as root on the device (whoever can read the data dir already owns the agent); this is
how the first admin token is made. Each change is also written to the device event log, so
the hub learns that a token was created or revoked, and by which local user.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.http.tokens import ROLES, TokenExists, TokenStore

ConfigLoader = Callable[[argparse.Namespace], Any]


def _who() -> str:
    if os.environ.get("SUDO_USER"):
        return os.environ["SUDO_USER"]
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _default_config(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from agent.config import DEFAULT_CONFIG_PATH, load_config

    path = args.config
    if path is None and Path(DEFAULT_CONFIG_PATH).exists():
        path = DEFAULT_CONFIG_PATH
    cfg = load_config(path)
    if getattr(args, "data_dir", None):
        cfg = replace(cfg, data_dir=Path(args.data_dir))
    return cfg


def _record(cfg: Any, kind: str, message: str, data: dict[str, Any]) -> None:
    """Audit into the store if it exists; a token made before the first agent start is
    still valid, it just has no event (there is no device log yet to write to)."""
    from agent.store import Store

    if not cfg.db_path.exists():
        return
    store = Store.open(cfg.db_path, recover=False, must_exist=True)
    try:
        store.event(kind, message, data=data)
    finally:
        store.close()


def cmd_create(args: argparse.Namespace, load: ConfigLoader) -> int:
    cfg = load(args)
    tokens = TokenStore.in_data_dir(cfg.data_dir)
    actor = f"local:{_who()}"
    try:
        info, token = tokens.create(args.name, args.role, created_by=actor)
    except TokenExists as exc:
        print(f"error: {exc} (revoke it first)", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        tokens.close()
    _record(
        cfg,
        "local.token_created",
        f"created {info.role} token {info.name!r} (by {actor})",
        {"token": {"id": info.id, "name": info.name, "role": info.role}, "actor": actor},
    )
    if args.json:
        print(json.dumps({**info.to_dict(), "token": token}))
    else:
        print(token)
        print(
            f"# {info.role} token {info.name!r} (id {info.id}); shown once, store it now",
            file=sys.stderr,
        )
    return 0


def cmd_list(args: argparse.Namespace, load: ConfigLoader) -> int:
    cfg = load(args)
    tokens = TokenStore.in_data_dir(cfg.data_dir)
    try:
        items = tokens.list(include_revoked=args.all)
    finally:
        tokens.close()
    if args.json:
        print(json.dumps({"tokens": [t.to_dict() for t in items]}))
        return 0
    for t in items:
        state = "revoked" if t.revoked_at is not None else "active"
        print(f"{t.id}  {t.role:<8}  {state:<7}  {t.name}  (by {t.created_by})")
    return 0


def cmd_revoke(args: argparse.Namespace, load: ConfigLoader) -> int:
    cfg = load(args)
    tokens = TokenStore.in_data_dir(cfg.data_dir)
    try:
        before = tokens.get(args.id)
        if before is None:
            print(f"error: no token with id {args.id}", file=sys.stderr)
            return 2
        tokens.revoke(args.id)
    finally:
        tokens.close()
    if before.revoked_at is None:
        actor = f"local:{_who()}"
        _record(
            cfg,
            "local.token_revoked",
            f"revoked token {before.name!r} (by {actor})",
            {"token": {"id": before.id, "name": before.name, "role": before.role}, "actor": actor},
        )
    print(f"revoked {before.id} ({before.name})")
    return 0


def add_token_commands(
    subparsers: Any,
    *,
    common: Callable[[argparse.ArgumentParser], None] | None = None,
    load_config: ConfigLoader | None = None,
) -> argparse.ArgumentParser:
    """Add ``token create|list|revoke`` to the ``signalbeam-agent`` parser.

    ``common(p)`` adds the CLI's shared flags (it must give ``--config``, ``--data-dir``
    and ``--json``); ``load_config(args)`` builds the ``AgentConfig``. Each leaf sets
    ``func(args) -> int``.
    """
    load = load_config or _default_config

    def shared(p: argparse.ArgumentParser) -> None:
        if common is not None:
            common(p)
            return
        p.add_argument("--config", help="agent config (TOML)")
        p.add_argument("--data-dir", help="override the config's data_dir")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    token = subparsers.add_parser("token", help="manage local HTTP API tokens")
    sub = token.add_subparsers(dest="token_command", required=True)

    p = sub.add_parser("create", help="create a token; prints it once")
    p.add_argument("--name", required=True, help="who it is for, e.g. 'alice'")
    p.add_argument("--role", choices=ROLES, default="viewer")
    shared(p)
    p.set_defaults(func=lambda a: cmd_create(a, load))

    p = sub.add_parser("list", help="list tokens (never their secrets)")
    p.add_argument("--all", action="store_true", help="include revoked tokens")
    shared(p)
    p.set_defaults(func=lambda a: cmd_list(a, load))

    p = sub.add_parser("revoke", help="revoke a token by id")
    p.add_argument("id")
    shared(p)
    p.set_defaults(func=lambda a: cmd_revoke(a, load))
    return token
