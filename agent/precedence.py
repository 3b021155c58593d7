"""Which desired revision a device runs: the precedence of local overrides and hub revisions.

This module is the whole rule, as pure functions (no I/O, no clock); the store
(``agent.store.Store.put_desired`` / ``current_desired``) asks it, and the reconcile loop
keys every deployment by the ``Revision`` it returns.

Identity. A desired revision is ``(source, generation, spec_hash)``. The hub numbers its
revisions (the KV revision) and a field tech's ``signalbeam-agent apply`` numbers its own
("newest + 1"), so the two number spaces collide: the hub's next revision for a device can
carry the number a local override already took. The number alone therefore never says
which deployment is which; a deployment belongs to exactly one revision, and a revision
from the other source (or with another spec) under the same number is a different one.

Precedence. In words (docs/reconcile.md says the same):

1. An uncleared local override wins; of several, the newest stored.
2. A local override is cleared by ``apply --clear`` (``DELETE /v1/local/desired``), or when
   a hub revision arrives whose generation is above every hub generation the device stored
   before: the operator has spoken again since. A replay of an older hub revision clears
   nothing.
3. Without an override, the hub revision with the highest generation.
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
    row id); ``cleared``: a local override that was cleared (never set for hub ones)."""

    order: int
    source: Source
    generation: int
    cleared: bool = False


@dataclass(frozen=True)
class HubPut:
    """What storing a hub revision does: ``store`` (False: that hub generation is already
    stored, a replay) and ``clears_local`` (rule 2)."""

    store: bool
    clears_local: bool


def hub_put(stored: Iterable[Stored], generation: int) -> HubPut:
    """Rule 2 for a hub revision of ``generation`` arriving now."""
    items = list(stored)
    hub = [s.generation for s in items if s.source == "hub"]
    if generation in hub:
        return HubPut(False, False)
    newest = not hub or generation > max(hub)
    overridden = any(s.source == "local" and not s.cleared for s in items)
    return HubPut(True, newest and overridden)


def effective(stored: Iterable[Stored]) -> Stored | None:
    """Rules 1 and 3: the revision the device must run, or None before any arrived."""
    items = list(stored)
    local = [s for s in items if s.source == "local" and not s.cleared]
    if local:
        return max(local, key=lambda s: s.order)
    hub = [s for s in items if s.source == "hub"]
    return max(hub, key=lambda s: (s.generation, s.order)) if hub else None


__all__ = [
    "SOURCES",
    "HubPut",
    "Revision",
    "Source",
    "Stored",
    "effective",
    "hub_put",
    "revision_of",
    "spec_hash",
]
