"""Certificate files for tests: a self-signed pair as ``signalbeam-hub init`` writes it."""

from __future__ import annotations

from pathlib import Path


def cert_pair(d: Path, name: str, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """``<name>-cert.pem`` and ``<name>-key.pem`` in ``d``, the certificate naming ``host``."""
    # Imported here: the hub (and cryptography) load only in tests that make a certificate.
    from hub.tls import self_signed

    cert, key = d / f"{name}-cert.pem", d / f"{name}-key.pem"
    self_signed(cert, key, host)
    return cert, key
