"""TLS for NATS clients of the hub's client port: enrolling agents, the operator CLI/TUI and
the hub's own connection (docs/deploy.md "TLS on the hub").

nats-py upgrades a connection to TLS whenever the server's INFO says ``tls_required``,
whatever the URL's scheme, with the ``tls=`` context or else the system's CAs. It does *not*
insist on TLS for a ``tls://`` URL: a server (or a man in the middle) that does not offer
TLS gets a plain connection. So callers that were told ``tls://`` check ``is_tls`` after
connecting, before they send anything secret.

Shared by agent, hub and tui (which may not import each other); standard library only.
"""

from __future__ import annotations

import ssl
from typing import Any, NamedTuple
from urllib.parse import urlsplit

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH = frozenset({62, 64})


def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying client context: only ``ca_file``'s certificates as roots when given (the
    hub's CA, or its self-signed certificate itself: pinning), else the system's CAs."""
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    # A pinned certificate that is not a self-signed root (a hub leaf certificate, or an
    # intermediate) is a trust anchor as it is, as nats-server's own ca_file treats it.
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def wants_tls(url: str) -> bool:
    """A ``tls://`` URL: the connection must be TLS, never a plain fallback."""
    return urlsplit(url).scheme == "tls"


def is_tls(nc: Any) -> bool:
    """Whether a connected nats-py client's transport is TLS. nats-py has no public
    accessor; its TCP transport keeps the stream writer, whose transport knows."""
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    if writer is None:
        return False
    return writer.get_extra_info("ssl_object") is not None


class TlsProblem(NamedTuple):
    message: str
    field: str  # what to fix: "ca_file" (the trust) or "host" (the name dialled)


def explain(exc: BaseException, host: str, ca_file: str | None) -> TlsProblem | None:
    """A one-line reason for a TLS failure while connecting, or None when ``exc`` is not one.

    Names what to fix: the CA file that did not sign the hub's certificate, or the host
    name the certificate does not cover."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        detail = getattr(exc, "verify_message", None) or str(exc)
        if code in _NAME_MISMATCH:
            return TlsProblem(
                f"the hub's certificate is not valid for {host!r} ({detail}); connect with a "
                "name or address the certificate covers (the hub's public_host)",
                "host",
            )
        if ca_file:
            return TlsProblem(
                f"the hub's certificate is not signed by CA {ca_file} ({detail})", "ca_file"
            )
        return TlsProblem(
            "the hub requires TLS and its certificate is not signed by a CA this machine "
            f"trusts ({detail}); give the hub's CA (or its self-signed certificate) as the CA "
            "file",
            "ca_file",
        )
    if isinstance(exc, ssl.SSLError):
        return TlsProblem(f"TLS handshake with the hub failed: {exc.reason or exc}", "ca_file")
    return None
