"""A small async client for the hub's operator API over NATS (used by the CLI and the TUI).

Only NATS and the ``protocol`` package: the TUI never touches the hub's database.

Every operator shares one NATS login, which may receive replies only under the operators'
inbox prefix (``_INBOX._op``): each operator can read the others' replies, so no reply may
carry a secret. ``call`` makes the secret of a verb that creates one (a new API key or
registration token: ``protocol.api.SECRET_VERBS``) here, sends it in the request (only the
hub can read ``sb.api.*``), and puts it into the result it returns, as the hub once did.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
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
from protocol.api import API_KEY_HEADER, DEVICE_WAIT_MARGIN, SECRET_VERBS, new_secret
from protocol.subjects import INBOX_OPERATOR, api, fleet_change
from tui.errors import ApiError

__all__ = ["ApiError", "HubClient"]  # ApiError's home is tui.errors; importers use either

DEFAULT_TIMEOUT = 5.0
CONNECT_ATTEMPTS = 3
CONNECT_RETRY_WAIT = 0.5
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
    """The URL without its password, for messages."""
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", url)


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


def connect_error(url: str, ca_file: str | None, exc: BaseException) -> ApiError:
    """``cannot connect …`` with the TLS reason in one line when there is one (wrong CA, a
    name the certificate does not cover), naming what to fix."""
    seen: BaseException | None = exc
    while seen is not None:
        problem = natstls.explain(seen, urlsplit(url).hostname or "", ca_file)
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
    return ApiError(codes.UNAVAILABLE, f"cannot connect to the hub at {redact(url)}: {exc}")


class HubClient:
    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        reconnect: bool = False,
        ca_file: str | None = None,
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.timeout = timeout
        # The CLI fails fast; a long-lived TUI reconnects forever.
        self.reconnect = reconnect
        self.ca_file = ca_file
        self.nc: NATS | None = None

    @classmethod
    def from_settings(cls, settings: Any, *, reconnect: bool = False) -> HubClient:
        """A client for resolved CLI settings (``tui.config.CliSettings``)."""
        return cls(
            settings.hub,
            settings.api_key,
            timeout=settings.timeout,
            reconnect=reconnect,
            ca_file=settings.ca_file,
        )

    async def connect(self) -> None:
        async def quiet(_: Exception) -> None:
            # nats-py logs every failed attempt with a traceback; the CLI reports once.
            return None

        # nats-server drops every login still in progress when it reloads its config (the hub
        # reloads on enrollment bursts and decommissions), so a one-shot command tries a few
        # times before it reports the hub unreachable.
        attempts = 1 if self.reconnect else CONNECT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                await self._connect_once(quiet)
                break
            except Exception as exc:
                if attempt == attempts:
                    raise connect_error(self.url, self.ca_file, exc) from exc
                await asyncio.sleep(CONNECT_RETRY_WAIT)
        assert self.nc is not None
        await ensure_tls(self.nc, self.url)

    async def _connect_once(self, quiet: Callable[[Exception], Awaitable[None]]) -> None:
        # nats-py treats max_reconnect_attempts=0 as "no limit" even for the first connect,
        # so the CLI allows one retry and bounds the whole attempt by the timeout too.
        self.nc = await asyncio.wait_for(
            nats.connect(
                self.url,
                name="signalbeam-cli",
                # The operator login may receive replies only under this prefix.
                inbox_prefix=INBOX_OPERATOR,
                connect_timeout=self.timeout,
                allow_reconnect=self.reconnect,
                max_reconnect_attempts=-1 if self.reconnect else 1,
                reconnect_time_wait=0.2 if not self.reconnect else 1.0,
                error_cb=None if self.reconnect else quiet,
                **tls_options(self.url, self.ca_file),
                # JWT mode: the URL's secret is the operator login's bearer JWT.
                **natsauth.auth_options(self.url),
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
        """One API request; the result object, or ``ApiError``."""
        if self.nc is None:
            await self.connect()
        assert self.nc is not None
        headers = {API_KEY_HEADER: self.api_key} if self.api_key else None
        body = dict(body or {})
        secret: tuple[str, str] | None = None
        if verb in SECRET_VERBS:
            field, prefix = SECRET_VERBS[verb]
            secret = (field, body.setdefault(field, new_secret(prefix)))
        payload = json.dumps(body).encode()
        timeout = reply_timeout(verb, body, self.timeout)
        try:
            msg = await self.nc.request(api(verb), payload, timeout=timeout, headers=headers)
        except NoRespondersError as exc:
            raise ApiError(codes.UNAVAILABLE, "no hub is serving the API (no responders)") from exc
        except NatsTimeout as exc:
            raise ApiError(
                codes.UNAVAILABLE, f"the hub did not answer {verb} within {timeout:g}s"
            ) from exc
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
