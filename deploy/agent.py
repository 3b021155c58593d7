"""pyinfra deploy: a SignalBeam agent on a device (Debian, Raspberry Pi OS).

    SB_ENROLL_TOKEN=sbt_... SB_ENROLL_PASSWORD=... \\
        pyinfra deploy/inventory.py deploy/agent.py --limit devices

The container engine (Podman + runc, or docker.io), optionally the Podman drop-in of
deploy/dev/system-deps.sh, the venv with signalbeam-edge, /etc/signalbeam/agent.toml,
enrollment with the hub once (skipped while the credentials file exists; the token is never
written to disk and pyinfra shows it masked), and ``signalbeam-agent.service``, enabled and
started. Every variable is described in docs/deploy.md and checked by deploy/validate.py
before anything is planned.
"""

from __future__ import annotations

import sys
from pathlib import Path

# pyinfra runs this file with exec(); make `deploy.*` importable from any working directory.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from pyinfra import host, logger  # noqa: E402
from pyinfra.api.operation import OperationMeta  # noqa: E402
from pyinfra.facts.files import File  # noqa: E402
from pyinfra.operations import apt, files, server  # noqa: E402

from deploy.commands import enroll_command  # noqa: E402
from deploy.common import (  # noqa: E402
    enable_unit,
    install_package,
    root_template,
    run_unit,
    settings_from_host,
)
from deploy.render import (  # noqa: E402
    AGENT_UNIT,
    PODMAN_DROPIN,
    UNIT_DIR,
    agent_context,
)
from deploy.validate import validate_agent  # noqa: E402

ENGINE_PACKAGES = {"podman": ["podman", "runc"], "docker": ["docker.io"]}
# The unit that provides the engine's API socket: Debian's podman package ships
# podman.socket (socket-activated `podman system service`), docker.io its docker.service.
ENGINE_UNITS = {"podman": "podman.socket", "docker": "docker.service"}


agent = settings_from_host(validate_agent)
context = agent_context(agent)

# ---------------------------------------------------------------- container engine
apt.packages(
    name=f"Install the container engine ({agent.engine})",
    packages=ENGINE_PACKAGES[agent.engine],
    update=True,
    cache_time=3600,
)
if agent.engine == "podman":
    # Opt-in: the drop-in (Podman on runc with explicit ulimits) works around sandboxes with
    # hybrid cgroups and tight rlimits, like the CI machine deploy/dev/system-deps.sh sets up.
    # A Raspberry Pi or any cgroup-v2 Debian runs Podman's defaults fine, and forcing runc
    # and low nofile limits there would only constrain the containers.
    if agent.podman_dropin:
        root_template(
            f"Podman drop-in {PODMAN_DROPIN}",
            "podman-signalbeam.conf.j2",
            PODMAN_DROPIN,
        )
    else:
        files.file(
            name=f"No Podman drop-in: remove {PODMAN_DROPIN}", path=PODMAN_DROPIN, present=False
        )
enable_unit(ENGINE_UNITS[agent.engine], start=agent.start_services)

# ---------------------------------------------------------------- package and config
package_ops = install_package(agent.package)
files.directory(
    name="Create /etc/signalbeam",
    path=str(Path(agent.config_path).parent),
    user="root",
    group="root",
    mode="755",
)
files.directory(
    name=f"Create the agent data dir {agent.data_dir}",
    path=agent.data_dir,
    user="root",
    group="root",
    mode="700",
)
# The hub's CA (public, so world-readable) before the config that names it; in the restart
# set, so a rotated CA reaches the leaf server on this run.
ca_ops: list[OperationMeta] = []
if agent.hub_ca_file and agent.remote_ca_file:
    ca_ops.append(
        files.put(
            name=f"Upload the hub CA to {agent.remote_ca_file}",
            src=agent.hub_ca_file,
            dest=agent.remote_ca_file,
            user="root",
            group="root",
            mode="644",
        )
    )
config = root_template(
    f"Write {agent.config_path}",
    "agent.toml.j2",
    agent.config_path,
    **context,
)

# ---------------------------------------------------------------- enrollment (once)
changed: list[OperationMeta] = [*package_ops, *ca_ops, config]
if host.get_fact(File, path=agent.credentials_file):
    host.noop(f"already enrolled ({agent.credentials_file} exists)")
elif not agent.enrolls:
    logger.warning(
        f"[{host.name}] no signalbeam_enroll_token and not enrolled: the agent runs in local "
        "mode (no hub) until a deploy with a token enrolls it"
    )
else:
    changed.append(
        server.shell(
            name="Enroll with the hub (once; token masked)",
            commands=[enroll_command(agent)],
        )
    )

# ---------------------------------------------------------------- the service
unit = root_template(
    f"Write {AGENT_UNIT}",
    f"{AGENT_UNIT}.j2",
    f"{UNIT_DIR}/{AGENT_UNIT}",
    **context,
)
run_unit(AGENT_UNIT, unit, changed, start=agent.start_services)
