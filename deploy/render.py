"""What the deploys hand to their templates, and a renderer that matches pyinfra's.

The deploys render with pyinfra's ``files.template``; the unit tests render the same files
with ``render()`` below. Both use jinja2 with ``StrictUndefined`` and
``keep_trailing_newline`` (what ``pyinfra.api.util.get_template`` always sets) plus
``JINJA_OPTIONS``, so a test sees byte for byte what a host gets. Strings that land in TOML
go through jinja's ``tojson`` filter: a JSON string is a valid TOML basic string, so quoting
is always right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from deploy.settings import HUB_ENV_PATH, AgentSettings, HubSettings

TEMPLATES = Path(__file__).resolve().parent / "templates"

HUB_UNIT = "signalbeam-hub.service"
HUB_WORKER_UNIT = "signalbeam-hub-worker@.service"


def hub_worker_unit(index: int) -> str:
    return f"signalbeam-hub-worker@{index}.service"


AGENT_UNIT = "signalbeam-agent.service"
UNIT_DIR = "/etc/systemd/system"
PODMAN_DROPIN = "/etc/containers/containers.conf.d/50-signalbeam.conf"


def jinja_options() -> dict[str, Any]:
    """Extra jinja Environment options for ``files.template(jinja_env_kwargs=...)``. A fresh
    dict each call: pyinfra pops keys out of the one it is given."""
    return {"trim_blocks": True, "lstrip_blocks": True}


def template_path(name: str) -> str:
    return str(TEMPLATES / name)


def render(name: str, **context: Any) -> str:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        **jinja_options(),
    )
    return env.get_template(name).render(**context)


def env_file_value(value: str) -> str:
    """Quote a value for a systemd EnvironmentFile (double quotes, backslash escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def hub_context(hub: HubSettings) -> dict[str, Any]:
    return {
        "hub": hub,
        "env_path": HUB_ENV_PATH,
        "env_lines": [(k, env_file_value(v)) for k, v in sorted(hub.replica_env.items())],
    }


def agent_context(agent: AgentSettings) -> dict[str, Any]:
    if agent.engine == "podman":
        engine_unit, socket_hint = "podman.socket", "/run/podman/podman.sock"
    else:
        engine_unit, socket_hint = "docker.service", "/var/run/docker.sock"
    return {
        "agent": agent,
        "engine_unit": engine_unit,
        "engine_socket_hint": agent.engine_socket or socket_hint,
    }
