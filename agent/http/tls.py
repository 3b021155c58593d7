"""A self-signed certificate for the local API when it listens beyond loopback.

Generated once, on first start, into ``<data_dir>/http-tls/``; its SHA-256 fingerprint is
what a technician compares (``signalbeam-agent status`` prints it) before trusting it.
``cryptography`` is imported only here, and only when TLS is needed: it costs RSS that a
loopback-only agent should not pay.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
import ssl
from pathlib import Path

TLS_DIR = "http-tls"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
VALID_DAYS = 3650


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
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"signalbeam-agent {host}")])
    sans: list[x509.GeneralName] = [x509.DNSName(host), x509.DNSName("localhost")]
    ip = ipaddress.ip_address(bind)
    if not ip.is_unspecified:
        sans.append(x509.IPAddress(ip))
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    key_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first, created 0600 from the start: never world-readable, not even for a moment.
    tmp_key = key.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    os.replace(tmp_key, key)
    tmp_cert = cert.with_suffix(".tmp")
    tmp_cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_cert, cert)
    return cert, key


def fingerprint(cert_path: Path) -> str:
    """SHA-256 of the DER certificate, as colon-separated upper-case hex (browser style)."""
    der = ssl.PEM_cert_to_DER_cert(cert_path.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def stored_fingerprint(data_dir: Path) -> str | None:
    """The fingerprint of the generated certificate, None before the first TLS start."""
    cert, _ = cert_paths(data_dir)
    return fingerprint(cert) if cert.exists() else None


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx
