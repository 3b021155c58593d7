"""Readers of single pyinfra data variables: each returns the typed value or its default,
or raises ``DeployDataError`` naming the variable.

Pure but for the look at local files (wheels, PEM certificates and keys on the operator's
machine). The rules that tie variables together live in ``deploy.validate``.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Absolute paths that need no quoting in a systemd unit or a shell command.
SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9._/+-]*$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class DeployDataError(ValueError):
    """A data variable is missing, mistyped or out of range; ``var`` names it."""

    def __init__(self, var: str, message: str) -> None:
        super().__init__(f"{var}: {message}")
        self.var = var
        self.message = message


def get_var(data: Mapping[str, Any], var: str) -> Any:
    # None counts as unset: `--data signalbeam_x=` and group data `x = None` mean "default".
    return data.get(var)


def read_str(data: Mapping[str, Any], var: str, default: str | None) -> str | None:
    value = get_var(data, var)
    if value is None:
        return default
    if not isinstance(value, str) or not value.strip():
        raise DeployDataError(var, "must be a non-empty string")
    if any(c in value for c in "\n\r\0"):
        raise DeployDataError(var, "must be one line")
    return value.strip()


def read_bool(data: Mapping[str, Any], var: str, default: bool) -> bool:
    value = get_var(data, var)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    # `pyinfra --data key=value` hands every value over as a string.
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    raise DeployDataError(var, "must be true or false")


def read_int(data: Mapping[str, Any], var: str, default: int, lo: int, hi: int, what: str) -> int:
    value = get_var(data, var)
    if value is None:
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise DeployDataError(var, f"must be {what} ({lo}-{hi})")
    return value


def read_port(data: Mapping[str, Any], var: str, default: int) -> int:
    return read_int(data, var, default, 1, 65535, "a TCP port")


def read_path(data: Mapping[str, Any], var: str, default: str) -> str:
    value = read_str(data, var, default)
    assert value is not None
    if not SAFE_PATH_RE.fullmatch(value) or "/../" in value + "/" or value.rstrip("/") == "":
        raise DeployDataError(
            var, "must be an absolute path of letters, digits and . _ / + - (no spaces)"
        )
    return value.rstrip("/")


def read_ip(data: Mapping[str, Any], var: str, default: str) -> str:
    value = read_str(data, var, default)
    assert value is not None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise DeployDataError(var, f"must be an IP address, got {value!r}") from None
    return value


def check_host(value: str, var: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not HOSTNAME_RE.fullmatch(value):
        raise DeployDataError(var, f"must be a host name or IP address, got {value!r}")
    return value


def read_str_list(data: Mapping[str, Any], var: str) -> list[str]:
    value = get_var(data, var)
    if value is None:
        return []
    if isinstance(value, str):  # `--data signalbeam_tags=lab,rpi`
        value = [t.strip() for t in value.split(",") if t.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(t, str) for t in value):
        raise DeployDataError(var, "must be a list of strings")
    return list(value)


PEM_CERT = "-----BEGIN CERTIFICATE-----"


def read_local_file(data: Mapping[str, Any], var: str) -> tuple[str, str] | None:
    """A readable file on this machine: (path, text), or None when unset."""
    path = read_str(data, var, None)
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        raise DeployDataError(var, f"file not found on this machine: {path}")
    try:
        return str(p), p.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise DeployDataError(var, f"cannot read {path}: {exc.strerror or exc}") from None


def read_tls_pair(data: Mapping[str, Any], listener: str) -> tuple[str | None, str | None]:
    """``signalbeam_hub_<listener>_tls_cert``/``_key``: both or neither, the key matching."""
    cert_var, key_var = f"signalbeam_hub_{listener}_tls_cert", f"signalbeam_hub_{listener}_tls_key"
    cert = read_local_file(data, cert_var)
    key = read_local_file(data, key_var)
    if cert is None and key is None:
        return None, None
    if cert is None:
        raise DeployDataError(cert_var, f"is required with {key_var}")
    if key is None:
        raise DeployDataError(key_var, f"is required with {cert_var}")
    if PEM_CERT not in cert[1]:
        raise DeployDataError(cert_var, f"{cert[0]} is not a PEM certificate")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert[0], key[0])
    except ssl.SSLError as exc:
        raise DeployDataError(
            key_var,
            f"{key[0]} is not a PEM private key matching {cert[0]} ({exc.reason or exc})",
        ) from None
    return cert[0], key[0]


def read_ca_file(data: Mapping[str, Any], var: str) -> str | None:
    found = read_local_file(data, var)
    if found is None:
        return None
    path, text = found
    if PEM_CERT not in text:
        raise DeployDataError(var, f"{path} holds no PEM certificate")
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        raise DeployDataError(
            var, f"{path} is not a valid PEM CA bundle ({exc.reason or exc})"
        ) from None
    return path
