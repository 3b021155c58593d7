"""The device's side of per-device secrets: its sealing key and the values it may open.

A hub revision carries its secrets sealed to this device's key (``sbutil.seal``); the
store keeps them as they came. They are opened only here: by the intake, to refuse a
revision whose secrets this device cannot open (before anything of it runs), and by the
executor when it creates a container, which gets the values as env (``bundles.variables``
``open_secrets``). Opened values stay in this process's memory only; no record, event,
log line or journal entry holds one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bundles.variables import VariableError, pin, references
from protocol.desired import DesiredState
from sbutil.seal import SealError, SealKey, open_sealed

log = logging.getLogger(__name__)


def _open(key: SealKey, secrets: dict[str, Any]) -> dict[str, str]:
    sealed = secrets.get("sealed")
    if not isinstance(sealed, str) or not sealed:
        raise SealError("the hub sent no sealed values (it has no sealing key for this device)")
    try:
        plain = json.loads(open_sealed(key, sealed))
    except ValueError as exc:
        raise SealError(str(exc)) from None
    if not isinstance(plain, dict) or not all(isinstance(v, str) for v in plain.values()):
        raise SealError("the sealed values are not an object of strings")
    return plain


def fingerprints(desired: DesiredState) -> dict[str, str]:
    fps = (desired.secrets or {}).get("fingerprints")
    return dict(fps) if isinstance(fps, dict) else {}


def problem(desired: DesiredState, key: SealKey | None) -> str | None:
    """Why this device cannot run ``desired``'s bundle with its values (a reference without
    a value, secrets it cannot open), or None. Pure but for the decryption."""
    if desired.spec is None:
        return None
    try:
        pin(desired.spec, desired.variables or {}, fingerprints(desired))
    except VariableError as exc:
        return str(exc)
    names = references(desired.spec).secrets
    if not names:
        return None
    if key is None:
        return "this device has no sealing key for secrets: enroll it again with this agent"
    try:
        opened = _open(key, desired.secrets or {})
    except SealError as exc:
        return f"its secrets cannot be opened: {exc}"
    missing = sorted(n for n in names if n not in opened)
    return f"secret {missing[0]} is missing from the sealed values" if missing else None


class SecretBox:
    """Secret values by (name, fingerprint), opened from the stored revisions on demand."""

    def __init__(self, data_dir: Path, sealed: Callable[[], Iterable[dict[str, Any]]]) -> None:
        self.data_dir = data_dir
        self._sealed = sealed
        self._key: SealKey | None = None
        self._values: dict[tuple[str, str], str] = {}

    @property
    def key(self) -> SealKey | None:
        if self._key is None:
            self._key = SealKey.load(self.data_dir)
        return self._key

    def get(self, name: str, fingerprint: str) -> str | None:
        found = self._values.get((name, fingerprint))
        if found is not None:
            return found
        key = self.key
        if key is None:
            return None
        for secrets in self._sealed():
            fps = secrets.get("fingerprints")
            if not isinstance(fps, dict) or fps.get(name) != fingerprint:
                continue
            try:
                opened = _open(key, secrets)
            except SealError as exc:
                log.warning("stored sealed secrets cannot be opened: %s", exc)
                continue
            for n, value in opened.items():
                if isinstance(fps.get(n), str):
                    self._values[(n, fps[n])] = value
            found = self._values.get((name, fingerprint))
            if found is not None:
                return found
        return None
