"""Which value of each variable (or secret) a device gets: one pure function.

The rule (docs/bundles.md "Variables and secrets"): a value set for the device itself wins;
else one set for a group it is in; else the fleet's. A device in several groups that set the
same name gets the value set most recently (greater ``set_at``, then the group name that
sorts first) -- the rule assignments follow within a level (hub.desired) -- and ``device
show`` names the groups whose values it shadows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hub.desired import Membership

SCOPE_RANK = {"device": 2, "group": 1, "fleet": 0}


@dataclass(frozen=True)
class Setting:
    """One row of the ``variables`` table (a secret's ``value`` is its fingerprint)."""

    kind: str  # var | secret
    scope: str  # fleet | group | device
    target: str  # '' for the fleet
    name: str
    value: str
    set_at: str

    @property
    def source(self) -> str:
        return "fleet" if self.scope == "fleet" else f"{self.scope}:{self.target}"


@dataclass(frozen=True)
class Resolved:
    setting: Setting
    shadowed: tuple[str, ...] = ()  # sources of the same name it wins over

    @property
    def value(self) -> str:
        return self.setting.value

    @property
    def source(self) -> str:
        return self.setting.source


def _applies(s: Setting, m: Membership) -> bool:
    if s.scope == "fleet":
        return True
    if s.scope == "group":
        return s.target in m.groups
    return s.scope == "device" and s.target == m.device_id


def _key(s: Setting) -> tuple[int, str, str]:
    # Within groups: newest first, then the group name that sorts first (inverted so that
    # ``max`` picks it); the inversion maps each character below its rank.
    inverted = "".join(chr(0x10FFFF - ord(c)) for c in s.target)
    return (SCOPE_RANK[s.scope], s.set_at, inverted)


def resolve(m: Membership, settings: Iterable[Setting], kind: str) -> dict[str, Resolved]:
    """The value of each name of ``kind`` that reaches device ``m``, with its source."""
    by_name: dict[str, list[Setting]] = {}
    for s in settings:
        if s.kind == kind and _applies(s, m):
            by_name.setdefault(s.name, []).append(s)
    out: dict[str, Resolved] = {}
    for name, found in by_name.items():
        best = max(found, key=_key)
        others = tuple(sorted(s.source for s in found if s is not best))
        out[name] = Resolved(best, others)
    return out
