"""The hub's fleet store: one SQLite file in WAL mode, one writer (the hub process).

``Store`` is the facade the API and (later) ingest, enrollment and rollouts call. Its parts
live in small modules by subject; every multi-step write runs in one ``tx()``.
"""

from __future__ import annotations

from pathlib import Path

from hub.store.access import AccessStore
from hub.store.catalog import CatalogStore
from hub.store.db import open_db
from hub.store.fleet import FleetStore
from hub.store.gates import GateStore
from hub.store.metered import MeteredStore
from hub.store.rollouts import RolloutStore
from hub.store.signing import SigningStore
from hub.store.summary import SummaryStore
from hub.store.sync import SyncStore
from hub.store.telemetry import TelemetryStore
from hub.store.variables import VariableStore


class Store(
    FleetStore,
    CatalogStore,
    AccessStore,
    TelemetryStore,
    SyncStore,
    SummaryStore,
    GateStore,
    SigningStore,
    VariableStore,
    MeteredStore,
    RolloutStore,
):
    @classmethod
    def open(cls, path: Path | str) -> Store:
        return cls(open_db(path))

    def close(self) -> None:
        self.database.close()


__all__ = ["Store", "open_db"]
