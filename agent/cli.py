"""``signalbeam-agent``: run the agent, apply a bundle locally, show status and events.

``apply``, ``status`` and ``events`` work on the store file directly, so they work whether
or not the agent is running; a running agent notices a new local desired revision within
``desired_poll_interval`` (it polls SQLite's ``PRAGMA data_version``).

Exit codes: 0 ok, 1 runtime failure, 2 bad input (usage, config, bundle), 3 already running.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.config import DEFAULT_CONFIG_PATH, AgentConfig, load_config
from agent.errors import AgentError, ConfigError
from protocol import errors as perr
from sbutil.cli import Parser, add_version
from sbutil.logsetup import add_logging_args, setup_logging
from sbutil.private import restrict_umask

log = logging.getLogger("agent.cli")

EXIT_OK, EXIT_FAIL, EXIT_INPUT = 0, 1, 2


def _config(args: argparse.Namespace) -> AgentConfig:
    path = args.config
    if path is None and Path(DEFAULT_CONFIG_PATH).exists():
        path = DEFAULT_CONFIG_PATH
    cfg = load_config(path)
    if getattr(args, "data_dir", None):
        from dataclasses import replace

        cfg = replace(cfg, data_dir=Path(args.data_dir))
    return cfg


def _fail(args: argparse.Namespace, code: str, message: str, field: str | None = None) -> None:
    if getattr(args, "json", False):
        print(json.dumps(perr.error_body(code, message, field)))
    else:
        print(f"error: {message}", file=sys.stderr)


def _ts(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _who() -> str:
    # The audit trail names the person: sudo keeps the real user in SUDO_USER.
    if os.environ.get("SUDO_USER"):
        return os.environ["SUDO_USER"]
    try:
        import getpass

        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


# ---------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    from agent.daemon import run_agent

    return run_agent(_config(args))


def cmd_apply(args: argparse.Namespace) -> int:
    from agent.store import Store

    cfg = _config(args)
    spec_doc: dict[str, Any] | None = None
    chash: str | None = None
    if args.bundle is not None:
        from bundles import BundleError, BundleInvalid, content_hash, load_file

        try:
            spec = load_file(args.bundle)
        except BundleInvalid as exc:
            if args.json:
                details = [e.to_dict() for e in exc.errors]
                first = exc.errors[0].path if exc.errors else None
                print(json.dumps(perr.error_body(perr.INVALID, str(exc), first, details)))
            else:
                print(f"error: {args.bundle} is not a valid bundle:", file=sys.stderr)
                for e in exc.errors:
                    print(f"  {e}", file=sys.stderr)
            return EXIT_INPUT
        except BundleError as exc:  # unreadable file, too large, ...
            _fail(args, perr.BAD_REQUEST, str(exc))
            return EXIT_INPUT
        spec_doc, chash = spec.to_dict(), content_hash(spec)
    actor = f"cli:{_who()}"
    with Store.open(
        cfg.db_path,
        device_id=cfg.device_id,
        adopt_stored_id=not cfg.device_id_configured,
        recover=False,
    ) as store:
        if args.clear:
            cleared = store.clear_local_desired(actor=actor)
            out: dict[str, Any] = {"cleared": cleared}
            msg = "local override cleared" if cleared else "no local override to clear"
        else:
            d = store.put_local_desired(spec_doc, content_hash=chash, actor=actor)
            ref = None if spec_doc is None else f"{spec_doc['bundle']}@{spec_doc['version']}"
            out = {"generation": d.generation, "source": d.source, "bundle_ref": ref}
            msg = f"desired generation {d.generation}: {ref or 'run no bundle'} (local override)"
    _nudge(cfg.data_dir)
    print(json.dumps(out) if args.json else msg)
    return EXIT_OK


def _nudge(data_dir: Path) -> None:
    """Tell a running agent to look at desired state now rather than at its next poll."""
    from agent.store.lock import running_pid

    pid = running_pid(data_dir)
    if pid is None or pid <= 0:
        return
    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError as exc:  # not ours to signal: the agent's poll still picks it up
        log.debug("could not nudge agent pid %s: %s", pid, exc)


def cmd_status(args: argparse.Namespace) -> int:
    from agent.store import Store
    from agent.store.lock import running_pid

    cfg = _config(args)
    with Store.open(cfg.db_path, recover=False, must_exist=True) as store:
        summary = store.status_summary()
        from agent.store import updatelocks
        from agent.updategate import file_locks

        # Update gate: the last state reported, and every lock held now (files and API).
        summary["gate"] = updatelocks.last_gate(store)
        locks = file_locks(cfg.update.lock_dir) + updatelocks.held(store)
        summary["update_locks"] = [lk.to_dict() for lk in locks]
    pid = running_pid(cfg.data_dir)
    summary["agent"] = {"running": pid is not None, "pid": pid}
    # What sync and the local API last reported, from their own modules' readers.
    summary["hub"] = _try_call("agent.sync.status", "read_status_file", cfg.data_dir)
    summary["http"] = {
        "enabled": cfg.http.enabled,
        "bind": cfg.http.bind,
        "port": cfg.http.port,
        "tls_fingerprint": _try_call("agent.http.tls", "stored_fingerprint", cfg.data_dir),
    }
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return EXIT_OK
    print(_format_status(summary))
    return EXIT_OK


def _try_call(module: str, name: str, *args: Any) -> Any:
    """A reader from an optional package; None if it is missing or fails (status must
    always print what it can)."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)(*args)
    except Exception as exc:
        log.debug("%s.%s unavailable: %s", module, name, exc)
        return None


def _format_status(s: dict[str, Any]) -> str:
    lines = []
    agent = s["agent"]
    running = f"running (pid {agent['pid']})" if agent["running"] else "not running"
    lines.append(f"device      {s['device_id']}  (agent {running})")
    d = s["desired"]
    lines.append(
        "desired     none"
        if d is None
        else f"desired     generation {d['generation']} ({d['source']}): "
        f"{d['bundle_ref'] or 'run no bundle'}"
    )
    dep = s["deployment"]
    if dep is not None:
        why = f" - {dep['reason']}" if dep["reason"] else ""
        lines.append(
            f"deployment  generation {dep['generation']} ({dep.get('source', 'hub')}) "
            f"{dep['bundle_ref'] or '-'}: "
            f"{dep['status']}{why}"
        )
    gate = s.get("gate")
    if isinstance(gate, dict) and gate.get("state") == "deferred":
        lines.append(
            f"update      {gate.get('bundle_ref') or 'new revision'} deferred: {gate.get('reason')}"
        )
    for i, lk in enumerate(s.get("update_locks") or ()):
        label = "locks" if i == 0 else ""
        lines.append(f"{label:<11} {lk['who']} ({lk['source']}) since {_ts(lk['since'])}")
    run = s["last_reconcile"]
    if run is not None:
        why = f" - {run['reason']}" if run["reason"] else ""
        lines.append(
            f"last run    #{run['run_id']} {run['result'] or 'unfinished'} at "
            f"{_ts(run['finished_at'] or run['started_at'])}{why}"
        )
    if s["containers"]:
        for i, c in enumerate(s["containers"]):
            label = "containers" if i == 0 else ""
            lines.append(
                f"{label:<11} {c.get('name', '?')} {c.get('state', '?')} {c.get('health', '')}"
            )
    else:
        lines.append("containers  none")
    ob = s["outbox"]
    age = "" if ob["oldest_created_at"] is None else f", oldest {_ts(ob['oldest_created_at'])}"
    lines.append(f"outbox      {ob['pending']} pending ({_size(ob['bytes'])}){age}")
    lines.append(f"events      last seq {s['last_event_seq']}")
    from agent.store.space import describe_state

    lines.append(f"disk        {describe_state(s.get('disk'))}")
    # Online means the hub itself answered recently (agent.sync.liveness says it one way for
    # the CLI, the local API and its page).
    from agent.sync.liveness import describe

    lines.append(f"hub         {describe(s.get('hub'), time.time())}")
    metered = (s.get("hub") or {}).get("metered") if isinstance(s.get("hub"), dict) else None
    if isinstance(metered, dict) and metered.get("budget") is not None:
        from protocol.metered import format_budget, format_bytes

        used = metered.get("bytes_day")
        lines.append(
            f"metered     budget {format_budget(metered['budget'])}, tier {metered.get('tier')}"
            f" (heartbeat {metered.get('heartbeat')}s, rollups every {metered.get('flush')}s),"
            f" {'not measured yet' if used is None else format_bytes(used) + ' in 24 h'}"
            " (leaf message bytes)"
        )
    http = s["http"]
    if http["enabled"]:
        fp = http.get("tls_fingerprint")
        tls = f", TLS fingerprint {fp}" if fp else ""
        lines.append(f"local API   {http['bind']}:{http['port']}{tls}")
    else:
        lines.append("local API   disabled")
    m = s["metrics"]
    if m:
        parts = [
            f"{label} {m[key]:.1f}{unit}"
            for key, label, unit in (
                ("cpu.percent", "cpu", "%"),
                ("mem.percent", "mem", "%"),
                ("disk.percent", "disk", "%"),
                ("load.1", "load", ""),
                ("temp.celsius", "temp", "C"),
            )
            if key in m
        ]
        lines.append("metrics     " + "  ".join(parts))
    return "\n".join(lines)


def cmd_events(args: argparse.Namespace) -> int:
    from agent.store import Store

    cfg = _config(args)
    with Store.open(cfg.db_path, recover=False, must_exist=True) as store:
        events = store.events(after_seq=args.after_seq, limit=args.limit)
    if args.json:
        print(json.dumps([e.to_dict() for e in events], indent=2))
        return EXIT_OK
    for e in events:
        print(f"{e.seq:>6} {_ts(e.ts)} {e.severity:<7} {e.kind:<24} {e.message}")
    return EXIT_OK


# ---------------------------------------------------------------- argparse


def _non_negative(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return n


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; ``command`` (the first argument) decides which optional command
    modules are loaded."""
    parser = Parser(prog="signalbeam-agent", description="SignalBeam Edge device agent")
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
        p.add_argument(
            "--config", help=f"agent config (TOML); default {DEFAULT_CONFIG_PATH} if present"
        )
        p.add_argument("--data-dir", help="override the config's data_dir")
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        add_logging_args(p)

    p = sub.add_parser("run", help="run the agent until SIGTERM/SIGINT")
    common(p, json_flag=False)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("apply", help="set desired state locally from a bundle file")
    p.add_argument("bundle", nargs="?", help="bundle file (YAML or JSON)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--nothing", action="store_true", help="desire no bundle at all")
    what.add_argument("--clear", action="store_true", help="drop the local override")
    common(p)
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("status", help="show the device's state from the local store")
    common(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("events", help="show the device event log")
    p.add_argument("--after-seq", type=_non_negative, default=None, help="events after this seq")
    p.add_argument("--limit", type=_non_negative, default=50)
    common(p)
    p.set_defaults(func=cmd_events)

    # Commands owned by other packages load their modules (the NATS client for enroll) only
    # when asked for, so `run` and `status` do not pay for them.
    if command == "enroll" and (enroll := _optional("agent.sync.enroll", "add_enroll_command")):
        add_logging_args(enroll(sub))
    else:
        sub.add_parser("enroll", help="enroll this device with a hub (see: enroll --help)")
    if command == "token" and (tokens := _optional("agent.http.cli", "add_token_commands")):
        tokens(sub, common=common, load_config=_config)
    else:
        sub.add_parser("token", help="manage local HTTP API tokens (see: token --help)")
    return parser


def _optional(module: str, name: str) -> Any:
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        print(f"error: {module} is not available in this build: {exc}", file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    # Owner-only for every file the agent and its children create (store, tokens,
    # credentials, leaf config): sbutil/private.py.
    restrict_umask()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if args.command == "apply" and (args.bundle is None) == (not (args.nothing or args.clear)):
        parser.error("apply needs exactly one of: a bundle file, --nothing, --clear")
    if not hasattr(args, "func"):
        parser.error(f"{args.command} is not available in this build")
    try:
        setup_logging(args.log_format, args.log_level)
    except ValueError:
        parser.error(f"--log-level: unknown level {args.log_level!r}")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        _fail(args, perr.INVALID, str(exc), exc.field)
        return EXIT_INPUT
    except AgentError as exc:
        _fail(args, perr.UNAVAILABLE, str(exc))
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a traceback.
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
