"""Certificates for the hub's leafnode and client listeners (TLS on the device leaf link,
enrollment and operators), and the private CA and per-node certificates of a cluster's
routes.

``check_pair`` is what config loading runs so a wrong path or a key that does not belong to
the certificate is refused with the field's name before nats-server is started (nats-server
would only say so in its own log). ``self_signed`` makes the key and certificate that
``signalbeam-hub init --leaf-tls-self-signed`` writes; devices pin that certificate as their
``hub.ca_file``. The PEM comes from ``sbutil.tls`` (shared with the agent); refusing to
overwrite and the file modes are the hub's own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import ssl
from pathlib import Path
from typing import Any

from sbutil.tls import VALID_DAYS, IPAddress, der_fingerprint, self_signed_pem


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


# Route TLS between cluster nodes (docs/hub.md "NATS cluster"): a private CA the hub makes
# (or the operator's), one certificate per node signed by it. Nodes verify each other both
# ways (`verify: true`): a server that holds the route password but no certificate from
# this CA cannot join. Node certificates last three years (renewed with `signalbeam-hub
# route-certs`); the CA ten.
ROUTE_CERT_DAYS = 3 * 365


def _san(host: str) -> Any:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def route_ca_pem(name: str = "signalbeam-hub route CA") -> tuple[bytes, bytes]:
    """A new CA for the cluster's routes: ``(certificate, key)`` as PEM (EC P-256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(private.public_key()), critical=False
        )
        .sign(private, hashes.SHA256())
    )
    return _pem(cert, private)


def route_node_pem(
    ca_cert_pem: bytes, ca_key_pem: bytes, name: str, hosts: list[str]
) -> tuple[bytes, bytes]:
    """A node's route certificate signed by the CA: SANs ``hosts`` (each an IP or a DNS
    name: the address the other nodes dial, which they check) and ``name``; usable as both
    TLS server and client, since a route is dialled by one node and accepted by the other."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("the route CA key must be an EC or RSA private key")
    private = ec.generate_private_key(ec.SECP256R1())
    sans = list(dict.fromkeys([*hosts, name]))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=ROUTE_CERT_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in sans]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _pem(cert, private)


def _pem(cert: Any, private: Any) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization

    key_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_secret(path: Path, content: bytes) -> None:
    """Replace ``path`` with ``content``, 0600 from the start (a temp file renamed over)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
    os.replace(tmp, path)


def check_ca(path: Path) -> None:
    """A readable file with at least one PEM certificate (a CA bundle)."""
    _readable(path, "ca")
    if _first_pem(path) is None:
        raise CertProblem("ca", f"{path} is not a PEM certificate")


def issue_route_certs(
    ca_path: Path,
    ca_key_path: Path | None,
    nodes: list[tuple[Path, Path, str, list[str]]],
    *,
    ca: tuple[bytes, bytes] | None = None,
) -> None:
    """Every node's route certificate and key (``nodes``: cert path, key path, node name,
    the hosts its peers dial it by), signed by ``ca`` (cert and key PEM: the operator's own
    CA) or, without it, by the CA at ``ca_path``/``ca_key_path``, which is made first when
    neither exists. The operator's CA key is never written here; a CA made here keeps its
    key at ``ca_key_path`` (0600) for renewals."""
    if ca is not None:
        ca_cert_pem, ca_key_pem = ca
        write_secret(ca_path, ca_cert_pem)
    elif ca_path.exists():
        if ca_key_path is None or not ca_key_path.exists():
            raise FileNotFoundError(
                f"{ca_key_path}: the route CA's key is not here; give the CA to sign with"
            )
        ca_cert_pem, ca_key_pem = ca_path.read_bytes(), ca_key_path.read_bytes()
    else:
        if ca_key_path is None:
            raise ValueError("a new route CA needs a path for its key")
        ca_cert_pem, ca_key_pem = route_ca_pem()
        write_secret(ca_key_path, ca_key_pem)
        write_secret(ca_path, ca_cert_pem)
    first = _first_pem_bytes(ca_cert_pem)  # a bundle (rotation) signs with its first CA
    for cert, key, name, hosts in nodes:
        cert_pem, key_pem = route_node_pem(first, ca_key_pem, name, hosts)
        write_secret(key, key_pem)
        write_secret(cert, cert_pem)


def _first_pem_bytes(pem: bytes) -> bytes:
    found = _PEM_CERT.search(pem.decode("ascii", errors="replace"))
    if found is None:
        raise ValueError("no PEM certificate in the route CA file")
    return found.group(0).encode() + b"\n"


def load_ca(cert: Path, key: Path) -> tuple[bytes, bytes]:
    """An operator's CA for the routes: its certificate must be a CA and the key its own."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    for path, field in ((cert, "ca"), (key, "key")):
        _readable(path, field)
    cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
    try:
        parsed = x509.load_pem_x509_certificate(_first_pem_bytes(cert_pem))
        private = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise CertProblem(
            "ca", f"{cert} / {key}: not a PEM CA certificate and key ({exc})"
        ) from None
    try:
        basic = parsed.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = basic.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CertProblem("ca", f"{cert} is not a CA certificate (basicConstraints CA:TRUE)")
    if private.public_key() != parsed.public_key():
        raise CertProblem("key", f"{key} is not the key of {cert}")
    return cert_pem, key_pem
