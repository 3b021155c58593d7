"""Self-signed certificates, as the hub (leaf and client listeners) and the agent (local
API) both make them: an EC P-256 key, SHA-256 signature, ten years, not a CA.

Only the PEM bytes are made here; where and how they are written (refuse to overwrite,
replace atomically) is each caller's own policy. ``cryptography`` is imported only when a
certificate is generated: a process that never needs one does not pay its RSS.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Sequence

VALID_DAYS = 3650

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def self_signed_pem(common_name: str, sans: Sequence[str | IPAddress]) -> tuple[bytes, bytes]:
    """``(certificate, key)`` as PEM; a ``str`` SAN is a DNS name, an address an IP SAN.
    Valid from five minutes ago so a peer whose clock is slightly behind accepts it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    names = [x509.DNSName(s) if isinstance(s, str) else x509.IPAddress(s) for s in sans]
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    key_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def der_fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as colon-separated upper-case hex (browser style), the
    form a technician compares by eye."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
