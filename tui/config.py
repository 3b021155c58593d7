"""Where the CLI finds the hub and its API key: flags, then environment, then config file.

Config file: ``$SIGNALBEAM_CONFIG``, else ``$XDG_CONFIG_HOME/signalbeam/config.toml``
(``~/.config/signalbeam/config.toml``), with optional keys ``hub`` (a URL, or a list of them:
a hub NATS cluster's nodes), ``api_key``, ``timeout``, ``failover`` (seconds to ride out a
control-plane failover) and ``ca_file`` (the hub's CA, or its self-signed certificate, for
a TLS hub). ``--hub`` and ``$SIGNALBEAM_HUB`` take several URLs comma-separated.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui.errors import UsageError

DEFAULT_HUB = "nats://127.0.0.1:4222"
ENV_HUB = "SIGNALBEAM_HUB"
ENV_KEY = "SIGNALBEAM_API_KEY"
ENV_CONFIG = "SIGNALBEAM_CONFIG"
ENV_CA = "SIGNALBEAM_CA_FILE"
DEFAULT_FAILOVER = 30.0  # tui.client.DEFAULT_FAILOVER (not imported: that loads nats-py)
_KEYS: dict[str, type | tuple[type, ...]] = {
    "hub": (str, list),
    "api_key": str,
    "timeout": (int, float),
    "failover": (int, float),
    "ca_file": str,
}


class ConfigError(UsageError):
    """The hub settings (flags, environment, config file) are unusable: exit 2."""


@dataclass(frozen=True)
class CliSettings:
    hub: str  # one URL, or several comma-separated (``tui.client.split_urls``)
    api_key: str | None
    timeout: float
    ca_file: str | None = None
    failover: float = DEFAULT_FAILOVER


def config_path(env: Mapping[str, str]) -> Path:
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "signalbeam" / "config.toml"


def read_file(path: Path) -> dict[str, object]:
    if not path.exists():
        return {}
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    for key, value in doc.items():
        if key not in _KEYS:
            raise ConfigError(
                f"{path}: unknown setting {key!r} (known: hub, api_key, timeout, failover, ca_file)"
            )
        if isinstance(value, bool) or not isinstance(value, _KEYS[key]):
            raise ConfigError(f"{path}: {key} has the wrong type")
    hub = doc.get("hub")
    if isinstance(hub, list):
        if not hub or not all(isinstance(u, str) and u.strip() and "," not in u for u in hub):
            raise ConfigError(f"{path}: hub must be a URL or a non-empty list of URLs")
        doc["hub"] = ",".join(u.strip() for u in hub)
    return doc


def resolve(
    hub: str | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    ca_file: str | None = None,
) -> CliSettings:
    env = os.environ if env is None else env
    path = config_path(env)
    file = read_file(path)
    t = timeout if timeout is not None else file.get("timeout", 5.0)
    assert isinstance(t, int | float)
    if t <= 0:
        raise ConfigError("timeout must be positive")
    failover = file.get("failover", DEFAULT_FAILOVER)
    assert isinstance(failover, int | float)
    if failover < 0:
        raise ConfigError("failover must be 0 or more seconds")
    hub_value = hub or env.get(ENV_HUB) or str(file.get("hub") or DEFAULT_HUB)
    if not any(u.strip() for u in hub_value.split(",")):
        raise ConfigError("hub: no URL given")
    ca = ca_file or env.get(ENV_CA) or (str(file["ca_file"]) if "ca_file" in file else None)
    if ca is not None:
        ca = check_ca_file(ca)
    return CliSettings(
        ca_file=ca,
        hub=hub_value,
        api_key=api_key
        or env.get(ENV_KEY)
        or (str(file["api_key"]) if "api_key" in file else None),
        timeout=float(t),
        failover=float(failover),
    )


def check_ca_file(path: str) -> str:
    """A readable file holding a PEM certificate; refused up front, naming the setting,
    rather than as a TLS failure on every connect."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"ca_file: cannot read {path}: {exc.strerror or exc}") from exc
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"ca_file: {path} holds no PEM certificate")
    return str(Path(path).expanduser())


def from_args(args: Any) -> CliSettings:
    """``resolve`` with whichever of --hub, --api-key, --timeout, --ca-file were given."""
    return resolve(
        getattr(args, "hub", None),
        getattr(args, "api_key", None),
        getattr(args, "timeout", None),
        ca_file=getattr(args, "ca_file", None),
    )
