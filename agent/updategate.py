"""The update gate's inputs and outputs on a real device (``agent.reconcile.gates`` decides).

Inputs: the update locks (``*.lock`` files an app creates in ``[update] lock_dir``, and the
ones a field tech took through the local API, in the store), the maintenance windows (set
for the device or its group at the hub and delivered in the desired document, else the
bundle's ``update.maintenance_windows``), the clock and the device's time zone. Output: the
``gate`` reported part (``agent.store.updatelocks.report_gate``), which the hub shows as
"deferred: ..." on the device.

Everything here works offline: locks and windows are local, the clock is the device's.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.reconcile.gates import ALLOW, Decision, Lock, decide
from agent.store import updatelocks
from agent.store.store import Store
from bundles.model import BundleSpec
from bundles.windows import Window, WindowError, local_iso, parse_windows
from protocol.desired import DesiredState

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
MAX_LOCK_FILES = 64  # a directory full of junk must not make every check slow
MAX_WHO = 64


def device_timezone(name: str | None) -> tzinfo:
    """The configured IANA zone; else the system's (``TZ``, then ``/etc/localtime``), as a
    real zone with its DST rules (``datetime.astimezone()`` gives only today's offset)."""
    for candidate in (name, os.environ.get("TZ", "").lstrip(":") or None):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                log.warning("unknown time zone %r; trying the system's", candidate)
    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return UTC


def _who_of(path: Path) -> str:
    """The first line of the lock file (an app may write its name there), else its stem."""
    try:
        with path.open("rb") as f:
            first = f.read(256).decode("utf-8", "replace").splitlines()
    except OSError:
        first = []
    text = "".join(ch for ch in (first[0] if first else "") if ch.isprintable()).strip()
    return text[:MAX_WHO] or path.stem


def file_locks(lock_dir: Path) -> list[Lock]:
    """Every ``*.lock`` file in ``lock_dir`` is a held lock ("since": its modification time).
    A missing directory holds none."""
    try:
        entries = sorted(os.scandir(lock_dir), key=lambda e: e.name)
    except OSError:
        return []
    out = []
    for e in entries[: MAX_LOCK_FILES * 4]:
        if not e.name.endswith(LOCK_SUFFIX) or e.name.startswith("."):
            continue
        try:
            since = e.stat().st_mtime
        except OSError:
            continue  # released while we looked
        out.append(Lock(_who_of(Path(e.path)), since, f"file:{e.name}"))
        if len(out) >= MAX_LOCK_FILES:
            break
    return out


class UpdateGate:
    """What the reconcile loop asks before a new revision starts (``ReconcileLoop``'s
    ``update_gate``): ``check`` reads and decides, ``note`` reports."""

    def __init__(
        self,
        store: Store,
        lock_dir: Path,
        tz: tzinfo,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.lock_dir = Path(lock_dir)
        self.tz = tz
        self.clock = clock  # injectable: tests move a window's opening without waiting

    def locks(self) -> list[Lock]:
        return file_locks(self.lock_dir) + updatelocks.held(self.store)

    def windows(self, desired: DesiredState, spec: BundleSpec | None) -> tuple[Window, ...]:
        texts = desired.maintenance_windows
        if texts is None:
            texts = spec.update.maintenance_windows if spec is not None else ()
        try:
            return parse_windows(texts)
        except WindowError as exc:
            # The hub and the bundle validate windows; one that still fails here (an older
            # hub, a hand-edited store) must not block updates forever: it is ignored, loudly.
            log.error("maintenance windows ignored: %s", exc)
            return ()

    def check(self, desired: DesiredState, spec: BundleSpec | None) -> Decision:
        # A field tech's own local override is their decision at the device: not gated.
        if desired.source == "local":
            return ALLOW
        return decide(
            now=datetime.fromtimestamp(self.clock(), UTC),
            tz=self.tz,
            locks=self.locks(),
            windows=self.windows(desired, spec),
            force=desired.force,
        )

    def note(self, desired: DesiredState, decision: Decision) -> None:
        """Report the gate's state for ``desired`` (deduplicated by the store)."""
        doc: dict[str, Any] = {
            "state": "clear" if decision.allow else "deferred",
            "generation": desired.generation,
            "bundle_ref": _ref(desired.spec),
        }
        if not decision.allow:
            doc.update(
                kind=decision.kind,
                reason=decision.reason,
                until=None if decision.until is None else local_iso(decision.until, self.tz),
                locks=[lk.to_dict() for lk in self.locks()],
            )
        try:
            updatelocks.report_gate(self.store, doc)
        except Exception:  # reporting must never stop the loop deciding
            log.exception("could not record the update gate state")


def _ref(spec: dict[str, Any] | None) -> str | None:
    return f"{spec.get('bundle')}@{spec.get('version')}" if spec else None


__all__ = ["UpdateGate", "device_timezone", "file_locks"]
