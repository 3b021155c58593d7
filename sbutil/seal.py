"""Sealing to one device: an anonymous public-key box (X25519 + HKDF-SHA256 + AES-256-GCM).

Each device makes an X25519 key pair at enrollment (``<data_dir>/seal.key``, 0600) and gives
the hub its public half. The hub seals each device's secrets to that key: only the device's
private key opens them, so the sealed bytes may pass through NATS, the KV history and the
agent's store. A fresh ephemeral key per seal makes two seals of the same value differ.

``cryptography`` is imported only here and only when a key is used, so an agent of a fleet
without secrets never loads it (as ``bundles.signing`` does).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

__all__ = ["SealError", "SealKey", "open_sealed", "seal"]

_INFO = b"signalbeam seal v1"
KEY_FILE = "seal.key"


class SealError(ValueError):
    """A key or sealed blob that cannot be used (never says anything about the plaintext)."""


def _derive(shared: bytes, eph_pub: bytes, recipient: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(hashes.SHA256(), 32, salt=None, info=_INFO + eph_pub + recipient).derive(shared)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode(), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise SealError(f"{what} is not base64") from None


def seal(public_key: str, plaintext: bytes) -> str:
    """``plaintext`` sealed to the X25519 public key ``public_key`` (base64)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    recipient = _unb64(public_key, "the device's sealing key")
    if len(recipient) != 32:
        raise SealError("the device's sealing key must be 32 bytes")
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key = _derive(eph.exchange(X25519PublicKey.from_public_bytes(recipient)), eph_pub, recipient)
    nonce = os.urandom(12)
    return _b64(eph_pub + nonce + AESGCM(key).encrypt(nonce, plaintext, None))


class SealKey:
    """A device's private sealing key."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise SealError("a sealing key is 32 bytes")
        self._raw = raw

    @classmethod
    def generate(cls) -> SealKey:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
        )

        k = X25519PrivateKey.generate()
        return cls(k.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))

    @classmethod
    def load_or_create(cls, data_dir: Path) -> SealKey:
        """``<data_dir>/seal.key``, made (0600, atomically) when absent."""
        path = data_dir / KEY_FILE
        try:
            return cls(_unb64(path.read_text(encoding="ascii").strip(), str(path)))
        except FileNotFoundError:
            pass
        key = cls.generate()
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(KEY_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(_b64(key._raw) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return key

    @classmethod
    def load(cls, data_dir: Path) -> SealKey | None:
        path = data_dir / KEY_FILE
        try:
            return cls(_unb64(path.read_text(encoding="ascii").strip(), str(path)))
        except FileNotFoundError:
            return None

    def _private(self):  # type: ignore[no-untyped-def]
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        return X25519PrivateKey.from_private_bytes(self._raw)

    @property
    def public(self) -> str:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return _b64(self._private().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def __repr__(self) -> str:
        return "SealKey(<private>)"


def open_sealed(key: SealKey, sealed: str) -> bytes:
    """The plaintext of a ``seal`` to ``key``'s public half; ``SealError`` otherwise."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    blob = _unb64(sealed, "a sealed value")
    if len(blob) < 32 + 12 + 16:
        raise SealError("a sealed value is too short")
    eph_pub, nonce, ct = blob[:32], blob[32:44], blob[44:]
    priv = key._private()
    recipient = base64.b64decode(key.public)
    shared = priv.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    try:
        return AESGCM(_derive(shared, eph_pub, recipient)).decrypt(nonce, ct, None)
    except InvalidTag:
        raise SealError("a sealed value is not for this device's key (or was altered)") from None
