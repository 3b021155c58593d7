"""Which maintenance windows and overrides reach each device: one pure function.

The rule (docs/rollouts.md "Update locks and maintenance windows"): windows set for the
device itself win; else the windows of every group it is in that has some (any of them may
start an update: their union); else none are sent and the bundle's own
``update.maintenance_windows`` apply on the device. An empty list set for a device or group
means "any time" and so lifts the bundle's windows. An operator's override (``force``)
holds only while the device still resolves to the bundle version it was given for.
"""

from __future__ import annotations

from collections.abc import Mapping

from hub.desired import Membership


def windows_for(
    device: Membership,
    device_windows: Mapping[str, list[str]],
    group_windows: Mapping[str, list[str]],
) -> tuple[str, ...] | None:
    own = device_windows.get(device.device_id)
    if own is not None:
        return tuple(own)
    sets = [group_windows[g] for g in sorted(device.groups) if g in group_windows]
    if not sets:
        return None
    out: list[str] = []
    for ws in sets:
        out.extend(w for w in ws if w not in out)
    return tuple(out)


def forced(override_ref: str | None, resolved_ref: str | None) -> bool:
    return override_ref is not None and override_ref == resolved_ref
