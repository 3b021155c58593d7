"""A small async client for the hub's operator API over NATS (used by the CLI and the TUI).

Only NATS and the ``protocol`` package: the TUI never touches the hub's database.

Every operator shares one NATS login, which may receive replies only under the operators'
inbox prefix (``_INBOX._op``): each operator can read the others' replies, so no reply may
carry a secret. ``call`` makes the secret of a verb that creates one (a new API key or
registration token: ``protocol.api.SECRET_VERBS``) here, sends it in the request (only the
hub can read ``sb.api.*``), and puts it into the result it returns, as the hub once did.

Several hub URLs (a hub NATS cluster's nodes: docs/cli.md "Several hub URLs") are tried in
order; the first that takes the login serves the command. Which *process* answers is not the
client's concern: the operator API is a NATS request on ``sb.api.<verb>``, and only the hub
process that holds the control-plane lease subscribes to it (standby workers do not, so they
never answer differently), so NATS delivers every request to the owner through whichever
node the client reached. While no process owns (a standby taking over from an owner that
died: the lease TTL) the request has no responders: ``call`` waits and asks again for up to
``failover`` seconds, which is safe for reads and writes alike, since nobody received it. A
read that gets no answer in time (the owner died holding it) or whose connection dropped is
asked again the same way, through the next URL; a write is not, since it may have been
applied: the error says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from protocol import errors as codes
from protocol import natsauth, natstls
from protocol.api import (
    API_KEY_HEADER,
    DEVICE_WAIT_MARGIN,
    REQUESTS,
    SECRET_VERBS,
    is_write,
    new_secret,
)
from protocol.subjects import INBOX_OPERATOR, api, fleet_change
from sbutil.tasks import wait_for
from tui.errors import ApiError

__all__ = ["ApiError", "HubClient"]  # ApiError's home is tui.errors; importers use either

DEFAULT_TIMEOUT = 5.0
CONNECT_ATTEMPTS = 3
CONNECT_RETRY_WAIT = 0.5
# How long a command waits for a control-plane owner (no responders) or retries a read whose
# answer did not come: a standby takes over within the lease TTL (6 s) plus its start, which
# took up to ~7 s on a loaded 2-core box (docs/architecture.md "Scale path").
DEFAULT_FAILOVER = 30.0
FAILOVER_RETRY_WAIT = 0.5
MAYBE_APPLIED = " (it may have been applied: check before trying again)"
# The verbs the hub forwards to a device, waiting the body's "timeout" for its answer.
REMOTE_VERBS = frozenset({"devices.logs", "devices.restart", "devices.reconcile", "devices.status"})
NO_KEY = (
    "no API key given: pass --api-key, set SIGNALBEAM_API_KEY, or put api_key in the config "
    "file (signalbeam-hub init printed the first admin key)"
)


def reply_timeout(verb: str, body: dict[str, Any] | None, timeout: float) -> float:
    """How long to wait for the hub's reply: ``timeout``, or for a remote command that asks
    the hub to wait ``body["timeout"]`` s for the device, that plus a margin, so the hub's
    own answer (the result, or "did not answer") arrives rather than a client-side timeout."""
    wait = (body or {}).get("timeout")
    if verb in REMOTE_VERBS and isinstance(wait, int | float) and not isinstance(wait, bool):
        return max(timeout, float(wait) + DEVICE_WAIT_MARGIN)
    return timeout


def redact(url: str) -> str:
    """The URL without its login secret, for messages (``protocol.natsauth.redact_url``)."""
    return natsauth.redact_url(url)


def split_urls(value: str | Sequence[str]) -> list[str]:
    """Hub URLs from one setting: a list, or a comma-separated string (a password in a URL
    init printed is percent-encoded, so it holds no comma)."""
    items = natsauth.split_urls(value) if isinstance(value, str) else list(value)
    urls = [u.strip() for u in items if u.strip()]
    if not urls:
        raise ValueError("no hub URL given")
    return urls


def tls_options(url: str, ca_file: str | None) -> dict[str, Any]:
    """``nats.connect`` options for a TLS hub: ``ca_file`` pins its CA (or its self-signed
    certificate); a ``tls://`` URL without one trusts the system's CAs."""
    return {"tls": natstls.client_context(ca_file)} if ca_file or natstls.wants_tls(url) else {}


async def ensure_tls(nc: NATS, url: str) -> None:
    """nats-py falls back to a plain connection when a ``tls://`` server offers no TLS; the
    operator's password and API key must not follow it."""
    if natstls.wants_tls(url) and not natstls.is_tls(nc):
        await nc.close()
        raise ApiError(
            codes.UNAVAILABLE,
            f"the hub at {redact(url)} did not offer TLS; not sending credentials over a plain "
            "connection (a plain lab hub: use nats://)",
        )


def connect_errors(tried: dict[str, BaseException], ca_file: str | None) -> ApiError:
    """One URL: its own clear error (``connect_error``). Several: every URL tried with its
    reason, so the operator sees which node is down and which refused what."""
    if len(tried) == 1:
        url, exc = next(iter(tried.items()))
        return connect_error(url, ca_file, exc)
    each = {url: connect_error(url, ca_file, exc) for url, exc in tried.items()}
    codes_seen = {e.code for e in each.values()}
    code = codes.UNAUTHORIZED if codes_seen == {codes.UNAUTHORIZED} else codes.UNAVAILABLE
    lines = "; ".join(f"{redact(url)}: {e.message}" for url, e in each.items())
    return ApiError(code, f"no hub URL answered ({len(tried)} tried): {lines}", "hub")


def connect_error(url: str, ca_file: str | None, exc: BaseException) -> ApiError:
    """``cannot connect …`` with the TLS reason in one line when there is one (wrong CA, a
    name the certificate does not cover), naming what to fix."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # e.g. "Invalid IPv6 URL": the message below says the URL failed
        host = ""
    seen: BaseException | None = exc
    while seen is not None:
        problem = natstls.explain(seen, host, ca_file)
        if problem is not None:
            field = "ca_file" if problem.field == "ca_file" else "hub"
            return ApiError(codes.UNAVAILABLE, problem.message, field)
        if "authorization violation" in str(seen).lower():
            # nats-server's answer to a wrong user or password: no outage, so no
            # "unavailable" (which reads as "try again later").
            return ApiError(
                codes.UNAUTHORIZED,
                f"the hub at {redact(url)} refused the user or password in the hub URL "
                "(use the operator URL that signalbeam-hub init printed)",
                "hub",
            )
        seen = seen.__cause__ or seen.__context__
    # The client library's own text may quote the URL it was given.
    said = str(exc).replace(url, redact(url))
    return ApiError(codes.UNAVAILABLE, f"cannot connect to the hub at {redact(url)}: {said}")


class HubClient:
    def __init__(
        self,
        url: str | Sequence[str],
        api_key: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        reconnect: bool = False,
        ca_file: str | None = None,
        failover: float = DEFAULT_FAILOVER,
    ) -> None:
        self.urls = split_urls(url)
        self.api_key = api_key
        self.timeout = timeout
        # The CLI fails fast; a long-lived TUI reconnects forever.
        self.reconnect = reconnect
        self.ca_file = ca_file
        self.failover = failover
        self.nc: NATS | None = None
        self._at = 0  # the URL the connection uses (the next connect starts after it)

    @property
    def url(self) -> str:
        """The URL in use (the first before any connect)."""
        return self.urls[self._at]

    def use(self, url: str) -> None:
        """Record that the connection (made by a caller, the TUI's session) uses ``url``."""
        self._at = self.urls.index(url)

    @classmethod
    def from_settings(cls, settings: Any, *, reconnect: bool = False) -> HubClient:
        """A client for resolved CLI settings (``tui.config.CliSettings``)."""
        return cls(
            settings.hub,
            settings.api_key,
            timeout=settings.timeout,
            reconnect=reconnect,
            ca_file=settings.ca_file,
            failover=getattr(settings, "failover", DEFAULT_FAILOVER),
        )

    async def connect(self, start: int = 0) -> None:
        """Connect through the first URL, from ``start`` on, that takes the login;
        ``ApiError`` naming every URL tried and why when none does."""

        async def quiet(_: Exception) -> None:
            # nats-py logs every failed attempt with a traceback; the CLI reports once.
            return None

        # nats-server drops every login still in progress when it reloads its config (the hub
        # reloads on enrollment bursts and decommissions), so a one-shot command tries a few
        # rounds before it reports the hub unreachable.
        attempts = 1 if self.reconnect else CONNECT_ATTEMPTS
        order = [(start + i) % len(self.urls) for i in range(len(self.urls))]
        tried: dict[str, BaseException] = {}
        for attempt in range(1, attempts + 1):
            for at in order:
                url = self.urls[at]
                try:
                    await self._connect_once(quiet, url)
                except Exception as exc:
                    tried[url] = exc
                    continue
                assert self.nc is not None
                self._at = at
                await ensure_tls(self.nc, url)
                return
            if attempt < attempts:
                await asyncio.sleep(CONNECT_RETRY_WAIT)
        raise connect_errors(tried, self.ca_file) from tried[self.urls[order[-1]]]

    async def _connect_once(self, quiet: Callable[[Exception], Awaitable[None]], url: str) -> None:
        # nats-py treats max_reconnect_attempts=0 as "no limit" even for the first connect,
        # so the CLI allows one retry and bounds the whole attempt by the timeout too. One
        # URL per attempt: the reason each URL failed is its own (``connect_errors``).
        servers = [url] if not self.reconnect else [url, *(u for u in self.urls if u != url)]
        self.nc = await wait_for(
            nats.connect(
                servers,
                name="signalbeam-cli",
                # The operator login may receive replies only under this prefix.
                inbox_prefix=INBOX_OPERATOR,
                connect_timeout=self.timeout,
                allow_reconnect=self.reconnect,
                max_reconnect_attempts=-1 if self.reconnect else 1,
                reconnect_time_wait=0.2 if not self.reconnect else 1.0,
                dont_randomize=True,
                error_cb=None if self.reconnect else quiet,
                **tls_options(url, self.ca_file),
                # JWT mode: the URL's secret is the operator login's bearer JWT.
                **natsauth.auth_options(url),
            ),
            timeout=None if self.reconnect else self.timeout * 2 + 1,
        )

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()

    async def __aenter__(self) -> HubClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def call(self, verb: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API request; the result object, or ``ApiError``. Rides out a control-plane
        failover and a dead node (module docstring)."""
        headers = {API_KEY_HEADER: self.api_key} if self.api_key else None
        body = dict(body or {})
        secret: tuple[str, str] | None = None
        if verb in SECRET_VERBS:
            field, prefix = SECRET_VERBS[verb]
            secret = (field, body.setdefault(field, new_secret(prefix)))
        payload = json.dumps(body).encode()
        timeout = reply_timeout(verb, body, self.timeout)
        # An unknown verb is the hub's to refuse (an older client, a newer hub): as a read.
        write = verb in REQUESTS and is_write(verb)
        deadline = asyncio.get_running_loop().time() + self.failover
        while True:
            if self.nc is None or self.nc.is_closed:
                await self.connect(self._at)
            assert self.nc is not None
            try:
                msg = await self.nc.request(api(verb), payload, timeout=timeout, headers=headers)
                break
            except NoRespondersError as exc:
                # Nobody received it: no process owns the control plane right now.
                problem = ApiError(
                    codes.UNAVAILABLE,
                    f"no hub is serving the API (no responders for {self.failover:g}s through"
                    f" {redact(self.url)}: no control-plane owner)",
                )
                cause: BaseException = exc
            except NatsTimeout as exc:
                late = f"the hub did not answer {verb} within {timeout:g}s"
                if write:
                    raise ApiError(codes.UNAVAILABLE, late + MAYBE_APPLIED) from exc
                problem, cause = ApiError(codes.UNAVAILABLE, late), exc
            except (nats.errors.ConnectionClosedError, nats.errors.StaleConnectionError,
                    nats.errors.UnexpectedEOF, OSError) as exc:  # fmt: skip
                # The node went away under the request: the next URL, for a read. (A
                # reconnecting client's connection moves by itself: nats-py's.)
                if not self.reconnect:
                    await self._drop()
                lost = f"lost the connection to the hub at {redact(self.url)} during {verb}"
                if write:
                    raise ApiError(codes.UNAVAILABLE, lost + MAYBE_APPLIED) from exc
                self._at = (self._at + 1) % len(self.urls)
                problem, cause = ApiError(codes.UNAVAILABLE, lost), exc
            if asyncio.get_running_loop().time() >= deadline:
                raise problem from cause
            await asyncio.sleep(FAILOVER_RETRY_WAIT)
        return self._result(msg, secret)

    async def _drop(self) -> None:
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    def _result(self, msg: Msg, secret: tuple[str, str] | None) -> dict[str, Any]:
        try:
            doc = json.loads(msg.data)
        except ValueError as exc:
            raise ApiError(codes.INTERNAL, f"the hub sent a reply that is not JSON: {exc}") from exc
        if codes.is_error(doc):
            err = doc["error"]
            code = str(err.get("code", codes.INTERNAL))
            message = str(err.get("message", ""))
            if code == codes.UNAUTHORIZED and not self.api_key:
                # The hub can only say its header is empty; the operator needs the setting.
                message = NO_KEY
            raise ApiError(code, message, err.get("field"), err.get("details"))
        if not isinstance(doc, dict):
            raise ApiError(codes.INTERNAL, "the hub sent a reply that is not an object")
        if secret is not None:
            doc[secret[0]] = secret[1]  # made here; the reply carries none (module docstring)
        return doc

    async def watch_changes(
        self, callback: Callable[[dict[str, Any]], Awaitable[None]], kind: str = ">"
    ) -> Subscription:
        """Live change notices (``sb.fleet.changes.<kind>``) as decoded dicts."""
        if self.nc is None:
            await self.connect()
        assert self.nc is not None

        async def on_msg(msg: Msg) -> None:
            try:
                doc = json.loads(msg.data)
            except ValueError:
                return
            if isinstance(doc, dict):
                await callback(doc)

        return await self.nc.subscribe(fleet_change(kind), cb=on_msg)
