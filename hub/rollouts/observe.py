"""Read a device's reported state document into an ``Observation`` of one rollout. Pure.

The document is what ingest keeps per device (``reported_state.doc``), in the agent's own
vocabulary (``agent.store.status_summary``, which the TUI reads too):

- ``desired``: the newest desired revision the agent stored — ``generation`` (the KV
  revision), ``rollout_id``, ``bundle_ref``;
- ``deployment``: the newest deployment — ``generation``, ``bundle_ref``, ``status``
  (applying / healthy / failed / rolled_back), ``reason``;
- ``generation``: top level, from heartbeats: the generation running.

Every field may be missing or of the wrong type (an older agent, a half-synced device):
then the observation simply says less.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.rollouts.machine import Observation


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _map(doc: Any, key: str) -> Mapping[str, Any]:
    value = doc.get(key) if isinstance(doc, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def newest_generation(doc: Any) -> int | None:
    """The highest generation the document mentions: the baseline taken when the rollout
    writes a device's desired state, so an older deployment of the same version (a device
    that ran it before) is never mistaken for this rollout's."""
    found = [
        g
        for g in (
            _int(_map(doc, "desired").get("generation")),
            _int(_map(doc, "deployment").get("generation")),
            _int(doc.get("generation")) if isinstance(doc, Mapping) else None,
        )
        if g is not None
    ]
    return max(found) if found else None


def acknowledged(doc: Any, rollout_id: str, ref: str, base_generation: int | None) -> int | None:
    """The generation the device acknowledged for this rollout, or None.

    The desired document carries the rollout id, so a revision naming this rollout is
    proof. A writer that leaves the id out still works: a revision (or deployment) of the
    rollout's ``bundle@version`` newer than the baseline is taken as this rollout's.
    """
    desired = _map(doc, "desired")
    gen = _int(desired.get("generation"))
    newer = gen is not None and (base_generation is None or gen > base_generation)
    if gen is not None and desired.get("rollout_id") == rollout_id:
        return gen
    if newer and not desired.get("rollout_id") and desired.get("bundle_ref") == ref:
        return gen
    dep = _map(doc, "deployment")
    dep_gen = _int(dep.get("generation"))
    if (
        dep_gen is not None
        and dep.get("bundle_ref") == ref
        and (base_generation is None or dep_gen > base_generation)
        and desired.get("rollout_id") in (None, "", rollout_id)
    ):
        return dep_gen
    return None


def observe(
    doc: Any,
    rollout_id: str,
    ref: str,
    base_generation: int | None,
    known_generation: int | None,
) -> Observation:
    """This rollout as the device reported it. ``known_generation``: the generation already
    recorded as acknowledged (a floor: it sticks once the device's desired state moves on to
    something else, but a newer revision of this same rollout replaces it — the agent then
    closes the older one as "failed: superseded", which is not its verdict on the version)."""
    found = [
        g
        for g in (known_generation, acknowledged(doc, rollout_id, ref, base_generation))
        if g is not None
    ]
    if not found:
        return Observation()
    gen = max(found)
    dep = _map(doc, "deployment")
    dep_gen = _int(dep.get("generation"))
    # The deployment of the acknowledged generation, or of a newer one that runs the same
    # version (a writer may re-put an unchanged spec, which the agent sees as a new one).
    if dep_gen is not None and dep.get("bundle_ref") == ref and dep_gen >= gen:
        status = dep.get("status")
        reason = dep.get("reason")
        return Observation(
            gen,
            status if isinstance(status, str) else None,
            reason if isinstance(reason, str) else None,
        )
    return Observation(gen)
