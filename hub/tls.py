"""Certificates for the hub's leafnode and client listeners (TLS on the device leaf link,
enrollment and operators).

``check_pair`` is what config loading runs so a wrong path or a key that does not belong to
the certificate is refused with the field's name before nats-server is started (nats-server
would only say so in its own log). ``self_signed`` makes the key and certificate that
``signalbeam-hub init --leaf-tls-self-signed`` writes; devices pin that certificate as their
``hub.ca_file``. The PEM comes from ``sbutil.tls`` (shared with the agent); refusing to
overwrite and the file modes are the hub's own.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from pathlib import Path

from sbutil.tls import IPAddress, der_fingerprint, self_signed_pem


class CertProblem(ValueError):
    """What is wrong with a cert/key pair; ``field`` is ``"cert"`` or ``"key"``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _readable(path: Path, field: str) -> None:
    if not path.is_file():
        raise CertProblem(field, f"file not found: {path}")
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        raise CertProblem(field, f"cannot read {path}: {exc.strerror or exc}") from None


_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----")


def _first_pem(cert: Path) -> str | None:
    """The first certificate of a PEM file (a full chain lists the leaf first)."""
    found = _PEM_CERT.search(cert.read_text(encoding="ascii", errors="replace"))
    return None if found is None else found.group(0)


def check_pair(cert: Path, key: Path) -> None:
    """Both files exist, are readable, hold PEM, and the key belongs to the certificate."""
    _readable(cert, "cert")
    _readable(key, "key")
    if _first_pem(cert) is None:
        raise CertProblem("cert", f"{cert} is not a PEM certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        raise CertProblem(
            "key", f"{key} is not a PEM private key matching {cert} ({exc.reason or exc})"
        ) from None


def self_signed(cert: Path, key: Path, host: str) -> None:
    """A new EC key and a self-signed certificate whose SAN is ``host`` (an IP or a DNS
    name). Refuses to overwrite: replacing a pinned certificate cuts every device off."""
    if cert.exists() or key.exists():
        raise FileExistsError(f"{cert} or {key} already exists; not overwriting")
    san: str | IPAddress
    try:
        san = ipaddress.ip_address(host)
    except ValueError:
        san = host
    cert_pem, key_pem = self_signed_pem(f"signalbeam-hub {host}", [san])
    key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The key is created 0600 from the start: never readable by others, not even briefly.
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    cert.write_bytes(cert_pem)


def fingerprint(cert: Path) -> str:
    """SHA-256 of the (first) certificate, colon-separated upper-case hex."""
    pem = _first_pem(cert)
    if pem is None:
        raise ValueError(f"{cert} is not a PEM certificate")
    return der_fingerprint(ssl.PEM_cert_to_DER_cert(pem))


def own_client_context(cert: Path) -> ssl.SSLContext:
    """The hub's own NATS connection to its TLS client listener over loopback: it trusts
    exactly its own certificate (or that chain). No host name check: it dials 127.0.0.1,
    which the certificate (made for public_host) need not name."""
    from protocol.natstls import client_context

    ctx = client_context(str(cert))
    ctx.check_hostname = False
    return ctx
