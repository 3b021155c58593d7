"""Pieces both deploys share: reading and validating host data, the venv and the package,
"restart only if it was already running" for a systemd unit, and enabling a unit without
starting it (``signalbeam_start_services = false``).

Imported by deploy/hub.py and deploy/agent.py inside a pyinfra run (it uses pyinfra's
``host`` context); the rules themselves live in the pure ``deploy.validate``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import apt, files, pip, server, systemd
from pyinfra.operations.util import any_changed

from deploy.fields import DeployDataError
from deploy.render import jinja_options, template_path
from deploy.settings import PackageSettings

T = TypeVar("T")


def settings_from_host(validate: Callable[..., T], **kwargs: Any) -> T:
    """Validate this host's data before any operation is planned. A bad variable stops the
    whole run with one line naming it (pyinfra prints a ``PyinfraError`` without a
    traceback), rather than failing on some hosts half-way through."""
    try:
        return validate(host.data.dict(), **kwargs)
    except DeployDataError as exc:
        raise PyinfraError(f"[{host.name}] bad data variable {exc}") from None


@deploy("SignalBeam: Python venv and package")
def install_package(pkg: PackageSettings) -> list[OperationMeta]:
    """The venv and signalbeam-edge in it; returns the operations whose change means the
    installed code changed (the caller restarts its service then)."""
    apt.packages(
        name="Install Python 3 and venv support",
        # Debian's python3 has no ensurepip without python3-venv.
        packages=["python3", "python3-venv"],
        update=True,
        cache_time=3600,
    )
    files.directory(
        name=f"Create {PurePosixPath(pkg.venv).parent}",
        path=str(PurePosixPath(pkg.venv).parent),
        user="root",
        group="root",
        mode="755",
    )
    venv_kwargs = {"venv": True, "python": pkg.python}
    uploaded = _upload_wheelhouse(pkg)
    offline = f"--no-index --find-links {pkg.remote_wheels}" if pkg.wheelhouse else None
    if pkg.wheel is None:
        return [
            *uploaded,
            pip.packages(
                name=f"Install {pkg.pip_spec} into {pkg.venv}",
                packages=[pkg.pip_spec],
                virtualenv=pkg.venv,
                virtualenv_kwargs=venv_kwargs,
                extra_install_args=offline,
            ),
        ]
    pip_bin = f"{pkg.bin}/pip"
    wheel_name = PurePosixPath(pkg.wheel).name
    dest = f"{pkg.remote_wheels}/{wheel_name}"
    venv = pip.venv(name=f"Create the venv {pkg.venv}", path=pkg.venv, python=pkg.python)
    put = files.put(
        name=f"Upload {wheel_name}",
        src=pkg.wheel,
        dest=dest,
        user="root",
        group="root",
        mode="644",
    )
    # pip resolves the dependencies here. Planned only when the venv lacks this version (so a
    # second run changes nothing), and guarded by it at run time too. Guarded by the installed
    # version (from the wheel's file name) rather than by "the upload changed", so a run that
    # failed half-way is completed by the next one. A rebuilt wheel of an unchanged version
    # is "already satisfied" for pip, hence the forced reinstall below (dependencies
    # unchanged, skipped).
    dist, version = wheel_name.split("-")[:2]
    installed: list[OperationMeta] = []
    if host.get_fact(PipVersion, pip=pip_bin, dist=dist) == version:
        host.noop(f"{dist} {version} is installed in {pkg.venv}")
    else:
        installed.append(
            server.shell(
                name=f"Install {wheel_name} and its dependencies",
                commands=[
                    StringCommand(
                        QuoteString(pip_bin),
                        "show",
                        QuoteString(dist),
                        "2>/dev/null | grep -qx",
                        QuoteString(f"Version: {version}"),
                        "||",
                        QuoteString(pip_bin),
                        "install",
                        "--quiet",
                        *([offline] if offline else []),
                        QuoteString(dest),
                    ).get_raw_value()
                ],
            )
        )
    forced = server.shell(
        name=f"Reinstall {wheel_name} (rebuilt wheel, same version)",
        commands=[
            StringCommand(
                QuoteString(pip_bin),
                "install",
                "--quiet",
                "--force-reinstall",
                "--no-deps",
                QuoteString(dest),
            ).get_raw_value()
        ],
        _if=put.did_change,
    )
    return [*uploaded, venv, put, *installed, forced]


def _upload_wheelhouse(pkg: PackageSettings) -> list[OperationMeta]:
    """Every wheel of ``signalbeam_wheelhouse`` into the host's wheel dir, one operation per
    file, so a second run compares checksums and uploads nothing. A new dependency version
    changes the package's install step through the caller's change list only if the package
    itself changed; that is what a version pin is for."""
    if pkg.wheelhouse is None:
        return []
    return [
        files.put(
            name=f"Upload {wheel.name} (wheelhouse)",
            src=str(wheel),
            dest=f"{pkg.remote_wheels}/{wheel.name}",
            user="root",
            group="root",
            mode="644",
        )
        for wheel in sorted(Path(pkg.wheelhouse).glob("*.whl"))
        # The package's own wheel, when given as signalbeam_wheel, is uploaded by the caller.
        if pkg.wheel is None or wheel.name != PurePosixPath(pkg.wheel).name
    ]


def unit_running(unit: str) -> bool:
    """Whether ``unit`` runs now, when the deploy is planned (the hosts run systemd)."""
    status = host.get_fact(SystemdStatus, services=unit) or {}
    return bool(status.get(unit))


class PipVersion(FactBase[str]):
    """The version of ``dist`` installed in the venv of ``pip``, or "" (no venv yet, or not
    installed)."""

    def command(self, pip: str, dist: str) -> StringCommand:
        return StringCommand(
            "test -x",
            QuoteString(pip),
            "&&",
            QuoteString(pip),
            "show",
            QuoteString(dist),
            "2>/dev/null",
            "|| true",
        )

    def process(self, output: Any) -> str:
        for line in output:
            if line.startswith("Version:"):
                return str(line.split(":", 1)[1].strip())
        return ""


class UnitFileState(FactBase[str]):
    """``systemctl is-enabled UNIT``: "enabled", "disabled", "static", ... or "" for no such
    unit. Unlike pyinfra's ``SystemdEnabled`` (``systemctl show``, which needs a running
    systemd) this works offline: in a chroot or an image with systemd installed but not
    running, systemctl reads the unit files directly."""

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "systemctl"

    def command(self, unit: str) -> StringCommand:
        # is-enabled exits non-zero for "disabled" and unknown units: still an answer.
        return StringCommand(
            "systemctl", "is-enabled", QuoteString(unit), "2>/dev/null", "||", "true"
        )

    def process(self, output: Any) -> str:
        lines = [line.strip() for line in output if line.strip()]
        return lines[0] if lines else ""


def enable_unit(unit: str, start: bool) -> None:
    """Enable ``unit`` at boot, and with ``start`` also start it now. Without ``start``
    nothing talks to a running systemd: the unit is enabled (its symlinks written by
    systemctl offline) only if it is not yet, so a second run changes nothing."""
    if start:
        systemd.service(name=f"Enable and start {unit}", service=unit, running=True, enabled=True)
    elif host.get_fact(UnitFileState, unit=unit) in ("enabled", "static", "alias"):
        host.noop(f"{unit} is enabled (not started: signalbeam_start_services is false)")
    else:
        server.shell(
            name=f"Enable {unit} (not started: signalbeam_start_services is false)",
            commands=[f"systemctl enable {unit}"],  # unit names here are constants
        )


def root_template(
    name: str, template: str, dest: str, *, mode: str = "644", **context: Any
) -> OperationMeta:
    """Render ``deploy/templates/<template>`` to ``dest``, owned by root with ``mode``: the
    units, the agent's config, Podman's drop-in and the hub's credentials file."""
    return files.template(
        name=name,
        src=template_path(template),
        dest=dest,
        user="root",
        group="root",
        mode=mode,
        jinja_env_kwargs=jinja_options(),
        **context,
    )


@deploy("SignalBeam: systemd unit")
def run_unit(
    unit: str, unit_op: OperationMeta, changed: list[OperationMeta], start: bool = True
) -> None:
    """Reload systemd if the unit file changed, enable and start the unit, and restart it
    when anything it reads changed -- but only if it already ran when the deploy was planned:
    a unit that was stopped is started with the new files anyway, and starting then at once
    restarting a fresh service would only add a needless restart. Without ``start`` the unit
    is only enabled (see ``enable_unit``); systemd reads the files when it boots."""
    if not start:
        enable_unit(unit, start=False)
        return
    was_running = unit_running(unit)
    systemd.daemon_reload(name="Reload systemd units", _if=unit_op.did_change)
    enable_unit(unit, start=True)
    if was_running:
        systemd.service(
            name=f"Restart {unit} (its code, config or unit changed)",
            service=unit,
            running=True,
            restarted=True,
            _if=any_changed(unit_op, *changed),
        )


def group_and_user(user: str, home: str) -> None:
    """A system user and group of the same name, no login shell, home = its data dir."""
    server.group(name=f"Create group {user}", group=user, system=True)
    server.user(
        name=f"Create system user {user}",
        user=user,
        group=user,
        home=home,
        shell="/usr/sbin/nologin",
        system=True,
        ensure_home=False,  # the data dir is created with its own mode just after
        comment="SignalBeam Edge hub",
    )
