"""Which desired revision a device runs: the precedence of local overrides and hub revisions.

This module is the whole rule, one pure function (``effective``: no I/O, no clock); the
store (``agent.store.Store.put_desired`` / ``current_desired``) asks it, and the reconcile
loop keys every deployment by the ``Revision`` of what it answers.

Identity. A desired revision is ``(source, generation, spec_hash)``. The hub numbers its
revisions (the KV revision) and a field tech's ``signalbeam-agent apply`` numbers its own
("newest + 1"), so the two number spaces collide: the hub's next revision for a device can
carry the number a local override already took. The number alone therefore never says
which deployment is which; a deployment belongs to exactly one revision, and a revision
from the other source (or with another spec) under the same number is a different one.

Precedence. ``effective`` is the whole rule, in words (docs/reconcile.md says the same):

1. A local override is in force until it is cleared: by ``apply --clear``
   (``DELETE /v1/local/desired``), or by a hub revision that arrives after it with a
   generation above every hub generation the device had (the operator has spoken again
   since). A replay of an older hub revision clears nothing. Of several overrides in force,
   the newest stored wins.
2. Otherwise the hub revision with the highest generation runs.

A hub revision above every earlier one is, by definition, the one with the highest
generation, so "cleared by the hub" is simply "the top hub revision arrived after it": the
rule needs nothing but the stored revisions in arrival order. (The store still marks such
overrides cleared, for its event and its history; the answer does not depend on it.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from protocol.desired import DesiredState

Source = Literal["hub", "local"]
SOURCES: tuple[Source, ...] = ("hub", "local")


def spec_hash(spec: Mapping[str, Any] | None) -> str:
    """sha256 of the spec's canonical JSON (the form the store keeps it in); ``None`` ("run
    no bundle") hashes too, so every revision has one."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Revision:
    """The identity of one desired revision, and so of the deployment that runs it."""

    source: Source
    generation: int
    spec_hash: str

    @property
    def key(self) -> str:
        return f"{self.source}:{self.generation}:{self.spec_hash[:12]}"

    def describe(self) -> str:
        return f"{self.source} generation {self.generation}"


def revision_of(desired: DesiredState) -> Revision:
    return Revision(desired.source, desired.generation, spec_hash(desired.spec))


@dataclass(frozen=True)
class Stored:
    """A stored desired revision as the rule sees it. ``order``: arrival order (the store's
    row id); ``cleared``: a local override cleared explicitly (never set for hub ones)."""

    order: int
    source: Source
    generation: int
    cleared: bool = False


def effective(stored: Iterable[Stored]) -> Stored | None:
    """The revision the device must run, or None before any arrived."""
    items = list(stored)
    hub = [s for s in items if s.source == "hub"]
    top = max(hub, key=lambda s: (s.generation, s.order)) if hub else None
    local = [
        s
        for s in items
        if s.source == "local" and not s.cleared and (top is None or s.order > top.order)
    ]
    if local:
        return max(local, key=lambda s: s.order)
    return top


__all__ = [
    "SOURCES",
    "Revision",
    "Source",
    "Stored",
    "effective",
    "revision_of",
    "spec_hash",
]
