"""What the deploys hand to their templates, and a renderer that matches pyinfra's.

The deploys render with pyinfra's ``files.template``; the unit tests render the same files
with ``render()`` below. Both use jinja2 with ``StrictUndefined`` and
``keep_trailing_newline`` (what ``pyinfra.api.util.get_template`` always sets) plus
``JINJA_OPTIONS``, so a test sees byte for byte what a host gets. Strings that land in TOML
go through jinja's ``tojson`` filter: a JSON string is a valid TOML basic string, so quoting
is always right.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from deploy.settings import HUB_ENV_PATH, AgentSettings, HubSettings

TEMPLATES = Path(__file__).resolve().parent / "templates"

HUB_UNIT = "signalbeam-hub.service"
HUB_WORKER_UNIT = "signalbeam-hub-worker@.service"
# Nodes 1 and up of a hub NATS cluster: nats-server alone (docs/deploy.md).
HUB_NODE_UNIT = "signalbeam-hub-node.service"


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


# The hub.toml lines settle_modes reads on an initialised hub (pyinfra's FindInFile).
MODE_LINES = r"^(nats_auth|require_signed_bundles)[[:space:]]*="


def settle_modes(hub: HubSettings, existing: list[str] | None) -> HubSettings:
    """The NATS login mode and signature rule this deploy writes. ``existing``: the
    MODE_LINES of an initialised hub's hub.toml (None: a new hub). What the operator set
    wins; otherwise a new hub gets init's defaults (jwt, signatures required) and an existing
    one keeps its own (a key it lacks reads as before issue 16: password, not required), so
    a redeploy never flips a fleet's login mode under devices that have not moved yet."""
    found: dict[str, str] = {}
    for line in existing or ():
        m = re.match(r"\s*(\w+)\s*=\s*(.+?)\s*$", line)
        if m:
            found[m.group(1)] = m.group(2).strip('"').lower()
    new = existing is None
    auth = (
        hub.nats_auth
        or found.get("nats_auth")
        or ("jwt" if new or hub.cluster_hosts else "password")
    )
    if hub.require_signed_bundles is not None:
        signed = hub.require_signed_bundles
    elif "require_signed_bundles" in found:
        signed = found["require_signed_bundles"] == "true"
    else:
        signed = new
    return replace(hub, nats_auth=auth, require_signed_bundles=signed)


def hub_context(hub: HubSettings) -> dict[str, Any]:
    if hub.nats_auth is None or hub.require_signed_bundles is None:
        hub = settle_modes(hub, None)  # deploy/hub.py settles an initialised hub's first
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
