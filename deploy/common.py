"""Pieces both deploys share: reading and validating host data, the venv and the package,
and "restart only if it was already running" for a systemd unit.

Imported by deploy/hub.py and deploy/agent.py inside a pyinfra run (it uses pyinfra's
``host`` context); the rules themselves live in the pure ``deploy.validate``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any, TypeVar

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import apt, files, pip, server, systemd
from pyinfra.operations.util import any_changed

from deploy.validate import DeployDataError, PackageSettings

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
    if pkg.wheel is None:
        return [
            pip.packages(
                name=f"Install {pkg.pip_spec} into {pkg.venv}",
                packages=[pkg.pip_spec],
                virtualenv=pkg.venv,
                virtualenv_kwargs=venv_kwargs,
            )
        ]
    pip_bin = f"{pkg.bin}/pip"
    wheel_name = PurePosixPath(pkg.wheel).name
    dest = f"{PurePosixPath(pkg.venv).parent}/wheels/{wheel_name}"
    venv = pip.venv(name=f"Create the venv {pkg.venv}", path=pkg.venv, python=pkg.python)
    put = files.put(
        name=f"Upload {wheel_name}",
        src=pkg.wheel,
        dest=dest,
        user="root",
        group="root",
        mode="644",
    )
    # pip resolves the dependencies here. Guarded by the installed version (from the wheel's
    # file name) rather than by "the upload changed", so a run that failed half-way is
    # completed by the next one. A rebuilt wheel of an unchanged version is "already
    # satisfied" for pip, hence the forced reinstall below (dependencies unchanged, skipped).
    dist, version = wheel_name.split("-")[:2]
    first = server.shell(
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
                QuoteString(dest),
            ).get_raw_value()
        ],
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
    return [venv, put, first, forced]


def unit_running(unit: str) -> bool:
    """Whether ``unit`` runs now, when the deploy is planned (the hosts run systemd)."""
    status = host.get_fact(SystemdStatus, services=unit) or {}
    return bool(status.get(unit))


@deploy("SignalBeam: systemd unit")
def run_unit(unit: str, unit_op: OperationMeta, changed: list[OperationMeta]) -> None:
    """Reload systemd if the unit file changed, enable and start the unit, and restart it
    when anything it reads changed -- but only if it already ran when the deploy was planned:
    a unit that was stopped is started with the new files anyway, and starting then at once
    restarting a fresh service would only add a needless restart."""
    was_running = unit_running(unit)
    systemd.daemon_reload(name="Reload systemd units", _if=unit_op.did_change)
    systemd.service(name=f"Enable and start {unit}", service=unit, running=True, enabled=True)
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
