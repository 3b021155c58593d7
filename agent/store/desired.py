"""Desired revisions from the hub and local overrides, and which one is in effect
(``agent.precedence.effective``). Each stored revision writes a ``desired`` outbox row and a
``desired.changed`` event in its transaction."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from agent.errors import StoreError
from agent.precedence import SOURCES, Stored, effective
from agent.store import events, outbox
from agent.store.base import StoreBase, bundle_ref, dumps, loads, rows, set_meta
from agent.store.rows import DesiredRevision
from protocol.desired import DesiredState
from protocol.reported import DesiredPayload, RowKind

METERED_KEY = "metered_budget"


def metered_budget(c: sqlite3.Connection) -> int | None:
    """The data budget (bytes per day) the hub's newest revision set; None: none."""
    row = c.execute("SELECT value FROM meta WHERE key = ?", (METERED_KEY,)).fetchone()
    return int(row[0]) if row is not None and str(row[0]).isdigit() else None


def put(c: sqlite3.Connection, desired: DesiredState) -> bool:
    """Store a received revision; False if this (source, generation) is already stored.

    A hub revision that ends a local override (``agent.precedence.effective``: the top
    hub revision arrived after it) marks it cleared, with an event saying so.
    """
    if desired.source not in SOURCES:
        raise StoreError(f"desired source must be 'hub' or 'local', got {desired.source!r}")
    now = time.time()
    if c.execute(
        "SELECT 1 FROM desired_revisions WHERE source = ? AND generation = ?",
        (desired.source, desired.generation),
    ).fetchone():
        return False
    before = effective(precedence_rows(c))
    insert(c, desired, now)
    if desired.source == "hub":
        # The hub's newest word on the device's data budget (agent.sync.pacing); kept apart
        # from the revision in effect, since a local override says nothing about the link.
        set_meta(c, METERED_KEY, "" if desired.metered is None else desired.metered)
    after = effective(precedence_rows(c))
    if (
        desired.source == "hub"
        and before is not None
        and before.source == "local"
        and after is not None
        and after.source == "hub"
    ):
        clear_local(c, f"hub generation {desired.generation}", now)
    return True


def precedence_rows(c: sqlite3.Connection) -> list[Stored]:
    """The stored revisions the rule can pick from: local overrides not cleared and the
    top hub revision. No other row can be chosen, nor change the answer, so the rule
    answers the same on this subset as on the whole table."""
    found = c.execute(
        "SELECT id, source, generation, cleared_at FROM desired_revisions"
        " WHERE (source = 'local' AND cleared_at IS NULL)"
        " OR id = (SELECT id FROM desired_revisions WHERE source = 'hub'"
        "          ORDER BY generation DESC, id DESC LIMIT 1)"
    ).fetchall()
    return [Stored(r[0], r[1], r[2], r[3] is not None) for r in found]


def put_local(
    c: sqlite3.Connection,
    spec: dict[str, Any] | None,
    content_hash: str | None = None,
    actor: str = "cli",
) -> DesiredState:
    """Record a field override; allocates its generation above every one seen so far."""
    now = time.time()
    top = c.execute(
        "SELECT max(g) FROM (SELECT max(generation) AS g FROM desired_revisions "
        "UNION ALL SELECT max(generation) FROM deployments)"
    ).fetchone()[0]
    desired = DesiredState(
        generation=int(top or 0) + 1,
        spec=spec,
        source="local",
        content_hash=content_hash,
    )
    insert(c, desired, now, actor=actor)
    return desired


def clear_local(c: sqlite3.Connection, why: str, now: float) -> bool:
    found = c.execute(
        "SELECT id, generation FROM desired_revisions WHERE source = 'local' AND cleared_at IS NULL"
    ).fetchall()
    if not found:
        return False
    c.execute(
        "UPDATE desired_revisions SET cleared_at = ?, cleared_by = ? "
        "WHERE source = 'local' AND cleared_at IS NULL",
        (now, why),
    )
    gens = [r[1] for r in found]
    events.append(
        c,
        "desired.local_cleared",
        f"local override cleared ({why})",
        "info",
        {"generations": gens, "why": why},
        now,
    )
    return True


def insert(c: sqlite3.Connection, d: DesiredState, now: float, actor: str | None = None) -> None:
    ref = bundle_ref(d.spec)
    c.execute(
        "INSERT INTO desired_revisions (generation, source, spec, content_hash, rollout_id, "
        "bundle_ref, received_at, maintenance_windows, force, variables, secrets) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            d.generation,
            d.source,
            None if d.spec is None else dumps(d.spec),
            d.content_hash,
            d.rollout_id,
            ref,
            now,
            None if d.maintenance_windows is None else dumps(list(d.maintenance_windows)),
            int(d.force),
            None if d.variables is None else dumps(d.variables),
            None if d.secrets is None else dumps(d.secrets),
        ),
    )
    payload: DesiredPayload = {
        "generation": d.generation,
        "source": d.source,
        "content_hash": d.content_hash,
        "rollout_id": d.rollout_id,
        "bundle_ref": ref,
    }
    if d.source == "local":
        # The hub never saw a local override's spec; it travels with the report.
        payload["spec"] = d.spec
        payload["actor"] = actor
    outbox.append(c, RowKind.DESIRED, payload, now)
    what = ref or "no bundle"
    events.append(
        c,
        "desired.changed",
        f"desired generation {d.generation} ({what}) from {d.source}"
        + (f" by {actor}" if actor else ""),
        "info",
        {k: v for k, v in payload.items() if k != "spec"},
        now,
    )


def current(c: sqlite3.Connection) -> DesiredState | None:
    """The document to reconcile to, by ``agent.precedence.effective``: an uncleared
    local override, else the newest hub revision."""
    chosen = effective(precedence_rows(c))
    if chosen is None:
        return None
    found = rows(c, "SELECT * FROM desired_revisions WHERE id = ?", (chosen.order,))
    if not found:
        return None
    r = found[0]
    return DesiredState(
        generation=r["generation"],
        spec=loads(r["spec"]),
        source=r["source"],
        rollout_id=r["rollout_id"],
        content_hash=r["content_hash"],
        maintenance_windows=(
            None if r["maintenance_windows"] is None else tuple(loads(r["maintenance_windows"]))
        ),
        force=bool(r["force"]),
        variables=loads(r["variables"]),
        secrets=loads(r["secrets"]),
    )


def sealed_secrets(c: sqlite3.Connection, limit: int = 64) -> list[dict[str, Any]]:
    """The sealed secrets of the newest revisions that carry some, newest first (opened
    only by ``agent.secretbox`` with the device's key, when a container is created)."""
    out = []
    for (raw,) in c.execute(
        "SELECT secrets FROM desired_revisions WHERE secrets IS NOT NULL ORDER BY id DESC LIMIT ?",
        (limit,),
    ):
        found = loads(raw)
        if isinstance(found, dict):
            out.append(found)
    return out


def revisions(c: sqlite3.Connection, limit: int = 20) -> list[DesiredRevision]:
    found = rows(
        c, "SELECT * FROM desired_revisions ORDER BY id DESC LIMIT ?", (max(0, int(limit)),)
    )
    return [
        DesiredRevision(
            r["id"],
            r["generation"],
            r["source"],
            r["content_hash"],
            r["rollout_id"],
            r["bundle_ref"],
            r["received_at"],
            r["cleared_at"],
        )
        for r in found
    ]


def salvaged(found: list[dict[str, Any]]) -> list[DesiredState]:
    """The well-formed revisions among rows read from a corrupt file (``db.salvage_desired``)."""
    out = []
    for r in found:
        try:
            gen, src = r["generation"], r["source"]
            spec = loads(r["spec"])
            if not isinstance(gen, int) or src not in ("hub", "local"):
                continue
            if spec is not None and not isinstance(spec, dict):
                continue
            # A revision's gating survives too (else a salvaged update could start outside
            # its windows, or lose the operator's override).
            windows = loads(r.get("maintenance_windows"))
            out.append(
                DesiredState(
                    gen,
                    spec,
                    src,
                    r["rollout_id"],
                    r["content_hash"],
                    tuple(windows) if isinstance(windows, list) else None,
                    bool(r.get("force")),
                    variables=_obj(loads(r.get("variables"))),
                    secrets=_obj(loads(r.get("secrets"))),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _obj(value: Any) -> Any:
    return value if isinstance(value, dict) else None


def restore(c: sqlite3.Connection, restored: list[DesiredState], source_file: Path) -> None:
    """Put back the revisions salvaged from a corrupt file, with an event saying so."""
    now = time.time()
    for d in restored:
        insert(c, d, now, actor="recovered" if d.source == "local" else None)
    events.append(
        c,
        "store.salvage",
        "recovered desired state from the corrupt file: "
        + ", ".join(f"{d.source} generation {d.generation}" for d in restored),
        "warning",
        {"file": str(source_file), "generations": [d.generation for d in restored]},
        now,
    )


class DesiredStore(StoreBase):
    def sealed_secrets(self) -> list[dict[str, Any]]:
        return self.read_now(sealed_secrets)

    def put_desired(self, desired: DesiredState) -> bool:
        """Store a received revision; False if this (source, generation) is already stored."""
        return self.write_now(put, desired)

    def put_local_desired(
        self,
        spec: dict[str, Any] | None,
        *,
        content_hash: str | None = None,
        actor: str = "cli",
    ) -> DesiredState:
        """Record a field override; allocates its generation above every one seen so far."""
        return self.write_now(put_local, spec, content_hash, actor)

    def clear_local_desired(self, *, actor: str = "cli") -> bool:
        """Drop the local override (if any); the hub's desired state applies again."""
        return self.write_now(clear_local, f"cleared by {actor}", time.time())

    def current_desired(self) -> DesiredState | None:
        """The document to reconcile to: an uncleared local override, else the newest hub
        revision (``agent.precedence.effective``)."""
        return self.read_now(current)

    def metered_budget(self) -> int | None:
        """The data budget the hub set for this device (bytes per day); None: none."""
        return self.read_now(metered_budget)

    def desired_revisions(self, limit: int = 20) -> list[DesiredRevision]:
        return self.read_now(revisions, limit)
