"""The hub's key for the fleet's secrets: AES-256-GCM at rest, HMAC fingerprints.

The key is ``<data dir>/vault.key`` (0600), made by ``signalbeam-hub init`` or on the first
start of a hub from before secrets. It is not in the DB, so a copy of the DB (a Litestream
replica, a backup) reveals no secret; back it up apart (docs/security.md). Each secret's
ciphertext is bound to its scope, target and name (the AES-GCM associated data), so a row
copied to another name does not decrypt.

A *fingerprint* names one value of one secret without revealing it (HMAC-SHA256 keyed with
a key derived from the vault key): desired documents and the device's records carry it, so
a rotation changes what the device runs while the value itself travels only sealed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from hub.errors import ConfigError

KEY_BYTES = 32


class Vault:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"the vault key must be {KEY_BYTES} bytes")
        self._key = key
        self._mac = hmac.new(key, b"signalbeam fingerprint v1", hashlib.sha256).digest()

    @classmethod
    def load_or_create(cls, path: Path) -> Vault:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raw = b""
        if raw:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)  # a key readable by others is fixed, not refused
            try:
                return cls(base64.b64decode(raw.strip(), validate=True))
            except ValueError:
                raise ConfigError(f"{path} is not a vault key (base64 of 32 bytes)") from None
        key = os.urandom(KEY_BYTES)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(key) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return cls(key)

    @staticmethod
    def _aad(scope: str, target: str, name: str) -> bytes:
        return f"{scope}\x00{target}\x00{name}".encode()

    def encrypt(self, scope: str, target: str, name: str, value: str) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        return nonce + AESGCM(self._key).encrypt(
            nonce, value.encode(), self._aad(scope, target, name)
        )

    def decrypt(self, scope: str, target: str, name: str, blob: bytes) -> str:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            return (
                AESGCM(self._key)
                .decrypt(blob[:12], blob[12:], self._aad(scope, target, name))
                .decode()
            )
        except InvalidTag:
            raise ConfigError(
                f"secret {name} ({scope} {target}) does not decrypt with this hub's vault key"
            ) from None

    def fingerprint(self, name: str, value: str) -> str:
        return hmac.new(
            self._mac, name.encode() + b"\x00" + value.encode(), hashlib.sha256
        ).hexdigest()[:16]

    def __repr__(self) -> str:
        return "Vault(<key>)"
