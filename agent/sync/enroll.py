"""Enrollment: trade a registration token for the device's own NATS credentials.

``signalbeam-agent enroll --hub HOST:PORT --token TOKEN [--device-id ID] [--tags a,b]``
connects as the bootstrap user (which may only request ``sb.hub.enroll`` and receive replies
under ``_INBOX._enroll``), sends an ``EnrollRequest`` and receives an ``EnrollReply``. The
device makes its own NATS password and sends it in the request, which only the hub can read:
the reply travels to an inbox every enrolling device's shared login can see, so it carries no
secret (docs/sync.md "Enrollment"). ``--token-file PATH`` (``-``: stdin) keeps the token out of
``ps``. ``--hub tls://HOST:PORT`` insists on TLS
(the token goes out and the device's password comes back on this connection); the hub's
certificate is checked against ``--ca-file`` or ``[hub] ca_file`` (else the system's CAs).
A ``nats://`` hub that requires TLS is also reached over TLS, checked the same way. The reply is saved as the credentials file
(JSON, mode 0600, default ``<data_dir>/hub-credentials.json``) that ``SyncService`` reads on
start, and the device id is recorded in the store with an ``enrolled`` event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import secrets
import socket
import ssl
import sys
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import nats
import nats.errors

from agent.sync.errors import EnrollError
from agent.sync.gate import ENROLL_POLL
from agent.sync.gate import credentials_path as credentials_path  # re-exported
from protocol import natsauth, natstls
from protocol.enroll import (
    MAX_ENROLL_BYTES,
    DeviceFacts,
    EnrollReply,
    EnrollRequest,
    decode_enroll_reply,
    validate_tags,
)
from protocol.errors import UNAVAILABLE, MessageError, RemoteError
from protocol.subjects import ENROLL, INBOX_ENROLL, valid_device_id

log = logging.getLogger(__name__)

BOOTSTRAP_USER = "enroll"
BOOTSTRAP_PASSWORD_ENV = "SB_ENROLL_PASSWORD"
# EnrollError code (and JSON error code) of a TLS failure: the hub's certificate is not
# trusted, or a tls:// hub offered no TLS. Its own exit code: a setup problem to fix, not a
# refusal to retry.
TLS_ERROR = "tls"
EXIT_TLS = 3
LOGIN_ATTEMPTS = 6  # a login dropped by a concurrent config reload is tried again
LOGIN_RETRY_DELAY = 0.25  # seconds, times the attempt number
REQUEST_ATTEMPTS = 3  # an enrollment request whose reply was lost is sent again
MAX_TOKEN_FILE = 4096  # bytes read from --token-file (a token is < 100)


def new_device_password() -> str:
    """The device's own NATS password: 256 random bits, URL-safe (it goes in the leaf URL)."""
    return secrets.token_urlsafe(32)


def agent_version() -> str:
    try:
        return metadata.version("signalbeam-edge")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')[:255] or platform.system()
    except OSError:
        pass
    return platform.platform()[:255]


def _engine_guess(configured: str = "auto") -> str:
    if configured in ("docker", "podman"):
        return configured
    if Path("/run/podman/podman.sock").exists():
        return "podman"
    if Path("/var/run/docker.sock").exists():
        return "docker"
    return "unknown"


def local_facts(engine: str = "auto") -> DeviceFacts:
    return DeviceFacts(
        hostname=socket.gethostname()[:255] or "unknown",
        arch=platform.machine() or "unknown",
        os=_os_name() or "unknown",
        engine=_engine_guess(engine),
        agent_version=agent_version(),
    )


def hub_url(hub: str, user: str | None = None, password: str | None = None) -> str:
    """``HOST:PORT`` or a ``nats://``/``tls://[user:pass@]host:port`` URL -> a URL with
    bootstrap creds."""
    url = hub if "://" in hub else f"nats://{hub}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # "host:abc", out of range, "[::1" (an unclosed IPv6 address)
        parts, port = urlsplit(""), None
    if parts.scheme not in ("nats", "tls") or not parts.hostname or not port:
        raise EnrollError(
            "--hub must be HOST:PORT, nats://host:port or tls://host:port, got"
            f" {natsauth.redact_url(hub)!r}",
            "invalid",
            "hub",
        )
    if parts.username or user is None:
        return url
    from urllib.parse import quote

    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6
    return f"{parts.scheme}://{quote(user, safe='')}:{quote(password or '', safe='')}@{host}:{port}"


async def enroll(
    url: str,
    token: str,
    device_id: str,
    facts: DeviceFacts,
    tags: tuple[str, ...] = (),
    *,
    timeout: float = 10.0,
    ca_file: str | None = None,
    password: str | None = None,
    seal_key: str = "",
) -> EnrollReply:
    """One enrollment request. Raises ``EnrollError`` (with the hub's code when it refused,
    ``TLS_ERROR`` when the hub's certificate is not trusted or a ``tls://`` hub is plain).

    The returned reply holds the device's NATS password: ``password``, or a new one made
    here; the hub's reply carries none (an older hub's does, and then that one is used)."""
    if not valid_device_id(device_id):
        raise EnrollError(f"invalid device id {device_id!r}", "invalid", "device_id")
    password = password or new_device_password()
    # The device's own nkey (issue 16): a hub in JWT mode signs a JWT for its public key;
    # the seed never leaves this machine (saved 0600 with the credentials). Sent beside the
    # password, which a hub in password mode uses instead.
    seed = natsauth.new_seed("user")
    body = EnrollRequest(
        token,
        device_id,
        facts,
        tags,
        nats_password=password,
        nats_public_key=natsauth.public_key(seed),
        seal_key=seal_key,
    ).to_json()
    if len(body) > MAX_ENROLL_BYTES:
        raise EnrollError("enrollment request too large (too many or too long tags)", "too_large")

    async def quiet(_: Exception) -> None:
        # nats-py logs a failed connect with a traceback; the failure is reported once below.
        return None

    try:
        ctx = natstls.client_context(ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise EnrollError(
            f"cannot load the CA file {ca_file}: {exc}", "invalid", "ca_file"
        ) from None

    async def login() -> Any:
        for attempt in range(LOGIN_ATTEMPTS):
            try:
                nc = await nats.connect(
                    url,
                    connect_timeout=timeout,
                    allow_reconnect=False,
                    max_reconnect_attempts=0,
                    tls=ctx,
                    error_cb=quiet,
                    # The bootstrap login may receive replies only under this prefix.
                    inbox_prefix=INBOX_ENROLL,
                    # A JWT-mode hub's bootstrap secret is a bearer JWT.
                    **natsauth.auth_options(url),
                )
                return nc
            except Exception as exc:
                # A nats-server config reload (the hub adding another device's user) drops every
                # connection still logging in ("Authorization Violation", or "Connection lost"
                # when the close wins), right credentials or not: try again, a few times. A
                # wrong password or a hub that is down fails the same way after the last
                # attempt; a TLS problem at once (trying again cannot fix it).
                tls_problem = natstls.explain(exc, urlsplit(url).hostname or "", ca_file)
                if tls_problem is None and attempt < LOGIN_ATTEMPTS - 1:
                    await asyncio.sleep(LOGIN_RETRY_DELAY * (attempt + 1))
                    continue
                _raise_connect_error(exc, url, ca_file)
        raise AssertionError("unreachable: the last attempt raises")

    # The request is sent again, on a new login, when its reply does not come (a config
    # reload or a lost link closed the connection while the reply was in flight): the same
    # body, so the same device-made password and key, which the hub answers as the first
    # time without using the token again (hub/sync/enroll.py ``_repeats_enrollment``).
    for attempt in range(REQUEST_ATTEMPTS):
        nc = await login()
        if natstls.wants_tls(url) and not natstls.is_tls(nc):
            await nc.close()
            raise EnrollError(
                f"the hub at {_redact(url)} did not offer TLS; not sending the registration"
                " token over a plain connection (a plain lab hub: use nats://)",
                TLS_ERROR,
                "hub",
            )
        try:
            reply = await nc.request(ENROLL, body, timeout=timeout)
            break
        except nats.errors.NoRespondersError:
            raise EnrollError(
                "the hub's enrollment service is not answering", UNAVAILABLE
            ) from None
        except (nats.errors.TimeoutError, nats.errors.ConnectionClosedError) as exc:
            if attempt == REQUEST_ATTEMPTS - 1:
                what = f"within {timeout}s" if isinstance(exc, nats.errors.TimeoutError) else ""
                raise EnrollError(
                    f"no enrollment reply {what or '(connection closed)'} after {attempt + 1}"
                    " tries",
                    UNAVAILABLE,
                ) from None
            log.info("no enrollment reply (%s); asking again", type(exc).__name__)
        except nats.errors.Error as exc:
            raise EnrollError(f"enrollment request failed: {exc}") from None
        finally:
            await nc.close()
    try:
        out = decode_enroll_reply(reply.data)
    except RemoteError as exc:
        raise EnrollError(f"enrollment refused: {exc.message}", exc.code, exc.field) from None
    except MessageError as exc:
        raise EnrollError(f"malformed enrollment reply: {exc}", "invalid", exc.field) from None
    if out.device_id != device_id:
        raise EnrollError(f"hub enrolled {out.device_id!r}, not {device_id!r}", "invalid")
    if out.nats_jwt:
        # JWT mode: the device logs in with its key; no password is kept. The bootstrap URL
        # is kept to renew a JWT that expires while the device is offline.
        return replace(out, nats_password="", nats_seed=seed, bootstrap_url=url)
    return out if out.nats_password else replace(out, nats_password=password)


def _raise_connect_error(exc: Exception, url: str, ca_file: str | None) -> NoReturn:
    problem = natstls.explain(exc, urlsplit(url).hostname or "", ca_file)
    if problem is not None:
        field = "hub" if problem.field == "host" else "ca_file"
        raise EnrollError(problem.message, TLS_ERROR, field) from None
    raise EnrollError(f"cannot connect to the hub at {_redact(url)}: {exc}") from None


def _redact(url: str) -> str:
    # The shared one: parsing here raised on the malformed URLs errors are about, and a
    # token login (``token@host``) passed through whole.
    return natsauth.redact_url(url)


def save_credentials(path: Path, reply: EnrollReply) -> None:
    """Write atomically with mode 0600 from the start (the file holds a password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(reply.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_credentials(path: Path) -> EnrollReply:
    try:
        creds = decode_enroll_reply(path.read_bytes())
    except OSError as exc:
        raise EnrollError(f"cannot read credentials file {path}: {exc.strerror}") from None
    except (MessageError, RemoteError) as exc:
        raise EnrollError(f"credentials file {path} is invalid: {exc}", "invalid") from None
    if creds.nats_jwt:
        if not creds.nats_seed:
            raise EnrollError(f"credentials file {path} has a JWT but no nats_seed", "invalid")
        return creds
    if not creds.nats_password:
        raise EnrollError(f"credentials file {path} has no nats_password", "invalid")
    return creds


# ---------------------------------------------------------------- CLI


def add_enroll_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``enroll`` to ``signalbeam-agent``'s subparsers (sets ``func``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "enroll", help="enroll this device with a hub using a registration token"
    )
    p.add_argument("--config", default=None, help="agent config file (TOML)")
    p.add_argument("--data-dir", default=None, help="override the config's data_dir")
    p.add_argument(
        "--hub",
        required=True,
        help="HOST:PORT, nats://[user:pass@]host:port, or tls://... to insist on TLS",
    )
    p.add_argument(
        "--ca-file",
        default=None,
        help="PEM CA (or the hub's self-signed certificate) the hub's certificate must chain "
        "to (default: the config's [hub] ca_file, else the system's CAs)",
    )
    token = p.add_mutually_exclusive_group(required=True)
    token.add_argument(
        "--token",
        help="registration token from `signalbeam token create` (visible to every local user "
        "in `ps`: prefer --token-file)",
    )
    token.add_argument(
        "--token-file",
        metavar="PATH",
        help="read the registration token from this file ('-': from standard input)",
    )
    p.add_argument("--device-id", default=None, help="device id (default: from the config / host)")
    p.add_argument("--tags", default="", help="comma-separated tags, e.g. lab,rpi")
    p.add_argument("--bootstrap-user", default=BOOTSTRAP_USER)
    p.add_argument(
        "--bootstrap-password",
        default=os.environ.get(BOOTSTRAP_PASSWORD_ENV),
        help=f"bootstrap user's password (default: ${BOOTSTRAP_PASSWORD_ENV})",
    )
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_enroll)
    return p


def read_token(args: argparse.Namespace) -> str:
    """``--token``, or the first line of ``--token-file`` (``-``: stdin), stripped."""
    if args.token_file is None:
        token = str(args.token or "")
    else:
        try:
            if args.token_file == "-":
                raw = sys.stdin.read(MAX_TOKEN_FILE + 1)
            else:
                with open(args.token_file, encoding="utf-8") as f:
                    raw = f.read(MAX_TOKEN_FILE + 1)
        except (OSError, UnicodeDecodeError) as exc:
            raise EnrollError(
                f"cannot read --token-file {args.token_file}: {exc}", "invalid", "token_file"
            ) from None
        if len(raw) > MAX_TOKEN_FILE:
            raise EnrollError("--token-file holds more than a token", "invalid", "token_file")
        lines = raw.strip().splitlines()
        token = lines[0].strip() if lines else ""
    if not token:
        raise EnrollError("the registration token is empty", "invalid", "token")
    return token


def cmd_enroll(args: argparse.Namespace) -> int:
    from agent.config import DEFAULT_CONFIG_PATH, load_config
    from agent.errors import AgentError
    from agent.store import Store

    try:
        path_arg = args.config
        if path_arg is None and Path(DEFAULT_CONFIG_PATH).exists():
            path_arg = DEFAULT_CONFIG_PATH  # same rule as the other agent commands
        cfg = load_config(path_arg)
        if args.data_dir:
            cfg = replace(cfg, data_dir=Path(args.data_dir))
        device_id = args.device_id or cfg.device_id
        tags = validate_tags([t.strip() for t in args.tags.split(",") if t.strip()])
        url = hub_url(args.hub, args.bootstrap_user, args.bootstrap_password)
        ca_file = _ca_file_arg(args.ca_file) if args.ca_file else cfg.hub.ca_file
        token = read_token(args)
        # The key the hub seals this device's secrets to (sbutil.seal): made once, kept
        # across re-enrollments, never sent anywhere but its public half.
        from sbutil.seal import SealKey

        seal_key = SealKey.load_or_create(Path(cfg.data_dir)).public
        reply = asyncio.run(
            enroll(
                url,
                token,
                device_id,
                local_facts(cfg.engine),
                tags,
                timeout=args.timeout,
                ca_file=ca_file,
                seal_key=seal_key,
            )
        )
        path = credentials_path(cfg)
        # The store records the identity first: a store that belongs to another device
        # refuses here, before any credentials are written.
        with Store.open(cfg.db_path, device_id=device_id) as store:
            save_credentials(path, reply)
            store.event(
                "enrolled",
                f"enrolled with hub as {device_id}",
                data={"leaf_url": reply.leaf_url, "tags": list(tags)},
            )
    except MessageError as exc:
        return _enroll_failed(args, "invalid", str(exc), exc.field)
    except EnrollError as exc:
        return _enroll_failed(args, exc.code, str(exc), exc.field)
    except AgentError as exc:
        return _enroll_failed(args, "invalid", str(exc), getattr(exc, "field", None))
    if args.json:
        print(
            json.dumps(
                {"device_id": device_id, "credentials": str(path), "leaf_url": reply.leaf_url}
            )
        )
    else:
        print(f"enrolled as {device_id}; credentials in {path} (leaf link to {reply.leaf_url})")
        # Said plainly: a field tech need not restart an agent that is already running.
        print(f"a running agent links up to the hub within {ENROLL_POLL:g} s; no restart needed")
    return 0


def _ca_file_arg(value: str) -> str:
    """``--ca-file``, checked like the config's ``[hub] ca_file``."""
    from agent.config import check_ca_file

    try:
        return check_ca_file(Path(value).expanduser())
    except ValueError as exc:
        raise EnrollError(f"--ca-file: {exc}", "invalid", "ca_file") from None


def _enroll_failed(args: argparse.Namespace, code: str, message: str, field: str | None) -> int:
    if args.json:
        from protocol.errors import error_body

        print(json.dumps(error_body(code, message, field)))
    else:
        print(f"error: {message}", file=sys.stderr)
    if code == TLS_ERROR:
        return EXIT_TLS
    return 2 if code in ("invalid", "bad_request") else 1
