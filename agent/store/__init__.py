"""The agent's local SQLite store (WAL): desired revisions, deployments, journal, events,
metrics and the transactional outbox. See ``agent.store.store.Store``."""

from agent.store.rows import (
    DesiredRevision,
    EventRow,
    JournalRun,
    JournalStep,
    MetricPoint,
    OutboxRow,
)
from agent.store.store import Store

__all__ = [
    "DesiredRevision",
    "EventRow",
    "JournalRun",
    "JournalStep",
    "MetricPoint",
    "OutboxRow",
    "Store",
]
