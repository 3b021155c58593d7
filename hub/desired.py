"""Which bundle version each device should run, from the assignments: one pure function.

The rule (documented in docs/hub.md): the most specific assignment wins — an assignment to
the device itself beats one to any group it is in, which beats one to any tag it carries.
Within one level (a device in two assigned groups, or with two assigned tags) the newest
assignment wins: greater ``created_at``, then greater ``id``. A decommissioned device runs
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SPECIFICITY = {"device": 2, "group": 1, "tag": 0}


@dataclass(frozen=True)
class Assignment:
    id: int
    target_kind: str  # device | group | tag
    target: str
    bundle: str
    version: str
    created_at: str

    @property
    def ref(self) -> str:
        return f"{self.bundle}@{self.version}"


@dataclass(frozen=True)
class Membership:
    device_id: str
    groups: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    decommissioned: bool = False


def _applies(a: Assignment, m: Membership) -> bool:
    if a.target_kind == "device":
        return a.target == m.device_id
    if a.target_kind == "group":
        return a.target in m.groups
    if a.target_kind == "tag":
        return a.target in m.tags
    return False


def resolve(device: Membership, assignments: Iterable[Assignment]) -> Assignment | None:
    """The assignment that decides ``device``'s desired bundle, or None for none."""
    if device.decommissioned:
        return None
    best: Assignment | None = None
    best_key: tuple[int, str, int] | None = None
    for a in assignments:
        if a.target_kind not in SPECIFICITY or not _applies(a, device):
            continue
        key = (SPECIFICITY[a.target_kind], a.created_at, a.id)
        if best_key is None or key > best_key:
            best, best_key = a, key
    return best


def resolve_all(
    devices: Iterable[Membership], assignments: Iterable[Assignment]
) -> dict[str, Assignment | None]:
    """Resolve every device at once, indexing assignments so the cost is per device, not N*M."""
    by_device: dict[str, list[Assignment]] = {}
    by_group: dict[str, list[Assignment]] = {}
    by_tag: dict[str, list[Assignment]] = {}
    index = {"device": by_device, "group": by_group, "tag": by_tag}
    for a in assignments:
        if a.target_kind in index:
            index[a.target_kind].setdefault(a.target, []).append(a)
    out: dict[str, Assignment | None] = {}
    for m in devices:
        candidates = list(by_device.get(m.device_id, ()))
        for g in m.groups:
            candidates.extend(by_group.get(g, ()))
        for t in m.tags:
            candidates.extend(by_tag.get(t, ()))
        out[m.device_id] = resolve(m, candidates)
    return out
