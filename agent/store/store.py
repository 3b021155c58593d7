"""The agent's local store: one SQLite file in WAL mode, the device's single source of truth.

``Store`` is the facade: opening (with corruption recovery), the status summary, and one
mixin per aggregate, each in its own module with its SQL as functions of a connection:
``identity``, ``events``, ``outbox``, ``journal``, ``deployments``, ``observed``,
``desired``, ``metrics`` and ``retention``. The connection, its lock and transactions are
``agent.store.base``. Code on an event loop awaits ``store.read(fn, ...)`` /
``store.write(fn, ...)`` (``fn(store, ...)`` on the store's own worker thread); code without
one calls the methods. Rules every write follows:
- it is one short ``BEGIN IMMEDIATE`` transaction (writes inside ``store.write`` join it);
- every event and every state change writes its outbox row in that same transaction, numbered
  from the ``sequences`` table, so a crash can neither lose a delta nor number one twice.

The class implements ``agent.reconcile.ports.Recorder`` and adds the readers the HTTP API and
CLI need and the outbox API the sync task drains.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from agent.errors import StoreError, StoreFull
from agent.store import db as dbfile
from agent.store import desired as desired_sql
from agent.store import identity as identity_sql
from agent.store import space
from agent.store.base import bundle_ref
from agent.store.deployments import DeploymentsStore
from agent.store.desired import DesiredStore
from agent.store.events import EventsStore
from agent.store.identity import IdentityStore
from agent.store.journal import JournalStore
from agent.store.metrics import MetricsStore, Resolution
from agent.store.migrations import migrate
from agent.store.observed import ObservedStore
from agent.store.outbox import OutboxStore
from agent.store.retention import RetentionStore

__all__ = ["Resolution", "Store"]


class Store(
    IdentityStore,
    EventsStore,
    OutboxStore,
    JournalStore,
    DeploymentsStore,
    ObservedStore,
    DesiredStore,
    MetricsStore,
    RetentionStore,
):
    """Open with ``Store.open(path, device_id=...)``; close with ``close()``."""

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        device_id: str | None = None,
        adopt_stored_id: bool = False,
        recover: bool = True,
        must_exist: bool = False,
    ) -> Store:
        """Open (creating or migrating) the store at ``path``.

        ``device_id`` is recorded on first open; later opens must match it unless
        ``adopt_stored_id`` (the id was only defaulted from the host name, and the stored one
        wins). With ``recover`` a corrupt file is moved aside and a fresh one created, with an
        event saying so; without it (CLI tools beside a running agent) ``StoreCorrupt`` is
        raised instead.
        """
        p = Path(path)
        if must_exist and not p.exists():
            raise StoreError(f"no agent store at {p} (has the agent run with this data dir?)")
        try:
            conn, recovery = dbfile.open_checked(p, recover=recover)
            migrate(conn)
        except (sqlite3.Error, OSError) as exc:
            # On a full disk: nothing to open (first start) or a migration to write.
            err = dbfile.open_error(p, exc)
            if isinstance(exc, OSError) and not isinstance(err, StoreFull):
                raise
            raise err from exc
        try:
            store = cls(conn, p, device_id or "")
            store.device_id = store.write_now(
                identity_sql.init, p, device_id, adopt_stored_id, recovery is not None
            )
        except BaseException:
            conn.close()
            raise
        if recovery is not None:
            store.event(
                "store.corrupt",
                f"store file was corrupt and was moved aside to {recovery.moved_to.name}; "
                "started a fresh store, state will be rebuilt from the engine and desired state",
                severity="error",
                data={"moved_to": str(recovery.moved_to), "error": recovery.error},
            )
            store._restore_desired(recovery.moved_to)
        return store

    def _restore_desired(self, source_file: Path) -> None:
        restored = desired_sql.salvaged(dbfile.salvage_desired(source_file))
        if not restored:
            self.event(
                "store.salvage",
                "no desired state could be read from the corrupt file; waiting for the hub "
                "or a local apply",
                severity="warning",
                data={"file": str(source_file)},
            )
            return
        self.write_now(desired_sql.restore, restored, source_file)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status_summary(self) -> dict[str, Any]:
        """Everything ``signalbeam-agent status`` and ``GET /v1/status`` show from the store."""
        desired = self.current_desired()
        dep = self.latest_deployment()
        runs = self.journal(limit=1)
        last_run = runs[0] if runs else None
        containers = [
            {k: c.get(k) for k in ("name", "service", "state", "health", "image") if k in c}
            for c in self.observed()
        ]
        ident = self.identity()
        return {
            "device_id": self.device_id,
            "store_id": ident.get("store_id"),
            "store_path": str(self.path),
            "desired": None
            if desired is None
            else {
                "generation": desired.generation,
                "source": desired.source,
                "bundle_ref": bundle_ref(desired.spec),
                "content_hash": desired.content_hash,
                "rollout_id": desired.rollout_id,
            },
            "deployment": None
            if dep is None
            else {
                "generation": dep.generation,
                "source": dep.source,
                "bundle_ref": dep.bundle_ref,
                "status": dep.status,
                "reason": dep.reason,
                "started_at": dep.started_at,
                "finished_at": dep.finished_at,
            },
            "last_reconcile": None
            if last_run is None
            else {
                "run_id": last_run.id,
                "generation": last_run.generation,
                "trigger": last_run.trigger,
                "result": last_run.result,
                "reason": last_run.reason,
                "started_at": last_run.started_at,
                "finished_at": last_run.finished_at,
            },
            "containers": containers,
            "outbox": self.outbox_stats(),
            "last_event_seq": self.last_event_seq(),
            "metrics": self.latest_samples(),
            # The same "disk full" readiness and the 507s give, so no status view hides it.
            "disk": space.state(self.path.parent, self.disk_full()),
        }
