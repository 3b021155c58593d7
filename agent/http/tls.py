"""A self-signed certificate for the local API when it listens beyond loopback.

Generated once, on first start, into ``<data_dir>/http-tls/``; its SHA-256 fingerprint is
what a technician compares (``signalbeam-agent status`` prints it) before trusting it.
The PEM comes from ``sbutil.tls`` (shared with the hub), which imports ``cryptography`` only
when TLS is needed: it costs RSS that a loopback-only agent should not pay.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from pathlib import Path

from sbutil.tls import IPAddress, der_fingerprint, self_signed_pem

TLS_DIR = "http-tls"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"


def needs_tls(bind: str) -> bool:
    """TLS whenever the API is reachable from another machine (anything but loopback)."""
    return not ipaddress.ip_address(bind).is_loopback


def cert_paths(data_dir: Path) -> tuple[Path, Path]:
    d = data_dir / TLS_DIR
    return d / CERT_FILE, d / KEY_FILE


def ensure_certificate(data_dir: Path, bind: str) -> tuple[Path, Path]:
    """The certificate and key, generated if absent. Never overwrites an existing pair."""
    cert, key = cert_paths(data_dir)
    if cert.exists() and key.exists():
        return cert, key
    cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    host = socket.gethostname()
    sans: list[str | IPAddress] = [host, "localhost"]
    ip = ipaddress.ip_address(bind)
    if not ip.is_unspecified:
        sans.append(ip)
    sans.append(ipaddress.ip_address("127.0.0.1"))
    cert_pem, key_pem = self_signed_pem(f"signalbeam-agent {host}", sans)
    # Key first, created 0600 from the start: never world-readable, not even for a moment.
    tmp_key = key.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    os.replace(tmp_key, key)
    tmp_cert = cert.with_suffix(".tmp")
    tmp_cert.write_bytes(cert_pem)
    os.replace(tmp_cert, cert)
    return cert, key


def fingerprint(cert_path: Path) -> str:
    """SHA-256 of the DER certificate, as colon-separated upper-case hex (browser style)."""
    return der_fingerprint(ssl.PEM_cert_to_DER_cert(cert_path.read_text()))


def stored_fingerprint(data_dir: Path) -> str | None:
    """The fingerprint of the generated certificate, None before the first TLS start."""
    cert, _ = cert_paths(data_dir)
    return fingerprint(cert) if cert.exists() else None


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx
