"""Read a device's reported state document into an ``Observation`` of one rollout. Pure.

The document is what ingest keeps per device (``reported_state.doc``), in the agent's own
vocabulary (``agent.store.status_summary``, which the TUI reads too):

- ``desired``: the newest desired revision the agent stored — ``generation`` (the KV
  revision), ``rollout_id``, ``bundle_ref``;
- ``deployment``: the newest deployment row — ``generation``, ``source`` (hub / local),
  ``bundle_ref``, ``status`` (applying / healthy / failed / rolled_back), ``reason``;
- ``generation``: top level, from heartbeats: the generation running;
- ``gate``: the agent's update gate (``agent.updategate``): ``state`` deferred or clear for
  the ``generation`` / ``bundle_ref`` it judged, and the device's ``reason`` ("locked by
  anna since T", "outside maintenance window until T").

The newest row is not enough to judge a rollout: once a failed generation's rollback target
is healthy again, the newest row is the target's and the verdict is gone. So every
deployment row a device in an active rollout reports is also kept per generation
(``hub.rollouts.service.record_deployments``, in the ingest transaction) and passed here as
``verdicts``; a row of a local override (``source: local``) never counts for a rollout,
whatever its generation.

Every field may be missing or of the wrong type (an older agent, a half-synced device):
``protocol.reported.ReportedState`` reads those as absent, and the observation simply says
less.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hub.rollouts.machine import Observation
from protocol.reported import (
    FINAL_STATUSES,
    DeploymentPart,
    DesiredPart,
    ReportedState,
    container_bad,
)


@dataclass(frozen=True)
class Verdict:
    """One deployment row as reported: a generation's status (and why)."""

    generation: int
    bundle_ref: str | None
    status: str
    reason: str | None = None


def newest_generation(doc: Any) -> int | None:
    """The highest generation the document mentions: the baseline taken when the rollout
    writes a device's desired state, so an older deployment of the same version (a device
    that ran it before) is never mistaken for this rollout's."""
    return ReportedState.read(doc).newest_generation()


def _verdict(dep: DeploymentPart | None) -> Verdict | None:
    if dep is None or not dep.hub_revision or dep.generation is None or dep.status is None:
        return None
    return Verdict(dep.generation, dep.bundle_ref, dep.status, dep.reason)


def verdict_of(payload: Any) -> Verdict | None:
    """A ``deployment`` row of the hub's own revisions as a ``Verdict`` (None: not one)."""
    return _verdict(DeploymentPart.read(payload))


def acknowledged(doc: Any, rollout_id: str, ref: str, base_generation: int | None) -> int | None:
    """The generation the device acknowledged for this rollout, or None.

    The desired document carries the rollout id, so a revision naming this rollout is
    proof. A writer that leaves the id out still works: a revision (or deployment) of the
    rollout's ``bundle@version`` newer than the baseline is taken as this rollout's.
    """
    return _acknowledged(ReportedState.read(doc), rollout_id, ref, base_generation)


def _acknowledged(
    s: ReportedState, rollout_id: str, ref: str, base_generation: int | None
) -> int | None:
    desired = s.desired or DesiredPart()
    gen = desired.generation
    newer = gen is not None and (base_generation is None or gen > base_generation)
    if gen is not None and desired.rollout_id == rollout_id:
        return gen
    if newer and desired.rollout_id is None and desired.bundle_ref == ref:
        return gen
    dep = s.deployment
    if (
        dep is not None
        and dep.generation is not None
        and dep.hub_revision
        and dep.bundle_ref == ref
        and (base_generation is None or dep.generation > base_generation)
        and desired.rollout_id in (None, rollout_id)
    ):
        return dep.generation
    return None


def observe(
    doc: Any,
    rollout_id: str,
    ref: str,
    base_generation: int | None,
    known_generation: int | None,
    verdicts: Iterable[Verdict] = (),
) -> Observation:
    """This rollout as the device reported it. ``known_generation``: the generation already
    recorded as acknowledged (a floor: it sticks once the device's desired state moves on to
    something else, but a newer revision of this same rollout replaces it — the agent then
    closes the older one as "failed: superseded", which is not its verdict on the version).
    ``verdicts``: every deployment row recorded for the device during the rollout.

    The status is that generation's own verdict; failing one, the verdict of a newer
    generation of the same version (a writer may re-put an unchanged spec, which the agent
    sees as a new one). A final verdict (healthy / failed / rolled back) beats "applying"."""
    s = ReportedState.read(doc)
    found = [
        g
        for g in (known_generation, _acknowledged(s, rollout_id, ref, base_generation))
        if g is not None
    ]
    if not found:
        return Observation()
    gen = max(found)
    rows = list(verdicts)
    newest = _verdict(s.deployment)
    if newest is not None:
        rows.append(newest)
    mine = [v for v in rows if v.bundle_ref == ref and v.generation >= gen]
    if not mine:
        return Observation(gen, deferred=_deferred(s, ref, gen) or _overridden(s, gen))
    final = [v for v in mine if v.status in FINAL_STATUSES]
    # Its own generation first, then the newest; a final verdict before an "applying" one.
    pick = min(
        final or mine,
        key=lambda v: (v.generation != gen, -v.generation),
    )
    held = _overridden(s, gen) if pick.status not in FINAL_STATUSES else None
    return Observation(gen, pick.status, pick.reason, deferred=held)


def _deferred(s: ReportedState, ref: str, gen: int) -> str | None:
    """The gate's reason when the device defers this rollout's revision (or a newer one of
    the same version): a gate part about another generation or version says nothing here."""
    g = s.gate
    if g is None or not g.deferred or g.generation is None or g.generation < gen:
        return None
    if g.bundle_ref is not None and g.bundle_ref != ref:
        return None
    return g.reason or "deferred by the device"


def _overridden(s: ReportedState, gen: int) -> str | None:
    """A field override (``signalbeam-agent apply``) runs instead of the rollout's revision:
    the agent leaves that revision applying and runs it again when the override is cleared
    (docs/agent.md), so the device is held by its site, not failed."""
    dep = s.deployment
    if dep is None or dep.hub_revision or dep.generation is None or dep.generation < gen:
        return None
    if s.desired is not None and s.desired.source != "local":
        return None  # cleared: the hub's revision is in force again, being applied
    what = dep.bundle_ref or "a local bundle"
    return f"local override {what} in force on the device; the rollout's version runs when it is cleared"


def bake_problem(doc: Any, since: str | None) -> str | None:
    """What is wrong with a device while its phase bakes: the containers its newest
    snapshot (``observed``) shows exited, dead, restarting or unhealthy — only a snapshot
    taken after ``since`` (when the device succeeded), so the old version's last moments
    never count against the new one. None: nothing wrong, or nothing newer to judge by."""
    s = ReportedState.read(doc)
    as_of = s.observed_as_of
    if as_of is None or (since is not None and as_of <= since) or s.containers is None:
        return None
    bad = sorted(
        str(c.get("service") or c.get("name") or "?") for c in s.containers if container_bad(c)
    )
    if not bad:
        return None
    shown = ", ".join(bad[:3]) + (", …" if len(bad) > 3 else "")
    return f"{len(bad)} container{'s' if len(bad) != 1 else ''} not healthy ({shown})"
