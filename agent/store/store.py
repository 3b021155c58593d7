"""The agent's local store: one SQLite file in WAL mode, the device's single source of truth.

Rules every write method follows:
- it is one short ``BEGIN IMMEDIATE`` transaction, called from the event loop (no threads
  needed; a lock still guards the connection in case a reader runs in an executor);
- every event and every state change writes its outbox row in that same transaction, numbered
  from the ``sequences`` table, so a crash can neither lose a delta nor number one twice.

The class implements ``agent.reconcile.ports.Recorder`` and adds the readers the HTTP API and
CLI need and the outbox API the sync task drains.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from agent.errors import ConfigError, StoreError, StoreFull
from agent.metrics import rollup as ru
from agent.precedence import SOURCES, Revision, Stored, effective
from agent.reconcile.ports import Deployment, DeploymentStatus, Severity
from agent.store import db as dbfile
from agent.store import space
from agent.store.migrations import migrate
from agent.store.outbox_policy import PendingInfo, choose_drops, seq_ranges
from agent.store.rows import (
    DesiredRevision,
    EventRow,
    JournalRun,
    JournalStep,
    MetricPoint,
    OutboxRow,
)
from protocol.desired import DesiredState

log = logging.getLogger(__name__)

Resolution = Literal["raw", "1m", "1h"]
SEVERITIES = ("debug", "info", "warning", "error")
DEPLOYMENT_STATUSES = ("applying", "healthy", "failed", "rolled_back")
# Sent rows are kept a while for diagnosis, then deleted.
SENT_RETENTION = 3600.0
JOURNAL_RETENTION = 7 * 86400.0
MAX_DROP_RANGES = 100
FULL_MEMORY = 30.0  # seconds a write that failed for lack of space keeps the store "full"


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _store_error(exc: sqlite3.Error, prefix: str = "") -> StoreError:
    # SQLITE_FULL deserves words an operator acts on; the write was rolled back whole.
    if space.is_space_error(exc):
        return StoreFull(f"{prefix}disk full: the store could not write ({exc}); nothing was lost")
    return StoreError(f"{prefix}{exc}")


def _bundle_ref(spec: Mapping[str, Any] | None) -> str | None:
    if not spec:
        return None
    name, version = spec.get("bundle"), spec.get("version")
    return f"{name}@{version}" if name and version else None


class Store:
    """Open with ``Store.open(path, device_id=...)``; close with ``close()``."""

    def __init__(self, conn: sqlite3.Connection, path: Path, device_id: str) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path
        self.device_id = device_id
        # Why the last write failed for lack of space, and when (None once a write
        # succeeds again). It counts for FULL_MEMORY seconds: statvfs cannot see a quota,
        # but a remembered failure must not outlive the space coming back when nothing
        # writes (the API refuses writes while the store counts as full).
        self.full_reason: str | None = None
        self._full_at = 0.0
        self._full_low = False  # whether free space was under the floor at that failure
        # Opened on a full disk with the WAL index in memory (db.connect_on_any_disk): the
        # file is ours alone until space returns and it is reopened normally.
        self._exclusive = dbfile.is_exclusive(conn)
        self._next_reopen = 0.0

    # ---------------------------------------------------------------- opening

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
            store._init_identity(device_id, adopt_stored_id, fresh_sequences=recovery is not None)
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
            store._restore_desired(dbfile.salvage_desired(recovery.moved_to), recovery.moved_to)
        return store

    def _restore_desired(self, rows: list[dict[str, Any]], source_file: Path) -> None:
        restored = []
        for r in rows:
            try:
                gen, src = r["generation"], r["source"]
                spec = _loads(r["spec"])
                if not isinstance(gen, int) or src not in ("hub", "local"):
                    continue
                if spec is not None and not isinstance(spec, dict):
                    continue
                restored.append(DesiredState(gen, spec, src, r["rollout_id"], r["content_hash"]))
            except (KeyError, TypeError, ValueError):
                continue
        if not restored:
            self.event(
                "store.salvage",
                "no desired state could be read from the corrupt file; waiting for the hub "
                "or a local apply",
                severity="warning",
                data={"file": str(source_file)},
            )
            return
        now = time.time()
        with self._tx() as c:
            for d in restored:
                self._insert_desired(c, d, now, actor="recovered" if d.source == "local" else None)
            self._event(
                c,
                "store.salvage",
                "recovered desired state from the corrupt file: "
                + ", ".join(f"{d.source} generation {d.generation}" for d in restored),
                "warning",
                {"file": str(source_file), "generations": [d.generation for d in restored]},
                now,
            )

    def _init_identity(
        self, device_id: str | None, adopt_stored_id: bool, *, fresh_sequences: bool
    ) -> None:
        now = time.time()
        with self._tx() as c:
            row = c.execute("SELECT value FROM identity WHERE key='device_id'").fetchone()
            stored = row[0] if row else None
            if stored is None:
                if not device_id:
                    raise StoreError(f"{self.path}: store has no device id yet and none was given")
                c.executemany(
                    "INSERT INTO identity (key, value) VALUES (?, ?)",
                    [
                        ("device_id", device_id),
                        ("store_id", os.urandom(16).hex()),
                        # The outbox numbering's name, sent with every report: a store made
                        # again (this file deleted or emptied) numbers from 1 under a new
                        # epoch, which the hub applies as new rows instead of replays. A
                        # store made by an older agent has none and keeps its one numbering.
                        ("sync_epoch", os.urandom(12).hex()),
                        ("created_at", repr(now)),
                    ],
                )
                # A store recreated after corruption must not reuse numbers the hub has
                # already applied (it would drop the new rows as duplicates), so it starts
                # at wall-clock milliseconds, far above any count the old file could reach.
                # A moved-aside file next to us means the same, even if we were killed
                # between moving it and getting here.
                previous_life = fresh_sequences or any(
                    self.path.parent.glob(self.path.name + ".corrupt-*")
                )
                base = int(now * 1000) if previous_life else 0
                c.executemany(
                    "INSERT OR IGNORE INTO sequences (name, value) VALUES (?, ?)",
                    [("outbox", base), ("events", base)],
                )
                stored = device_id
            elif device_id and stored != device_id and not adopt_stored_id:
                raise ConfigError(
                    "device_id",
                    f"the store at {self.path} belongs to device {stored!r}, not {device_id!r}",
                )
        self.device_id = stored

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- plumbing

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._maybe_share()
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._noted(_store_error(exc, "cannot begin a transaction: ")) from exc
            try:
                yield c
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise self._noted(_store_error(exc)) from exc
                raise
            else:
                try:
                    c.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback()
                    raise self._noted(_store_error(exc, "commit failed: ")) from exc
                self.full_reason = None

    def _noted(self, err: StoreError) -> StoreError:
        if isinstance(err, StoreFull):
            self.full_reason = str(err)
            self._full_at = time.monotonic()
            self._full_low = space.low_on_space(self.path.parent) is not None
        return err

    def disk_full(self) -> str | None:
        """Why the store counts as full now, or None: free space under
        ``space.FLOOR_BYTES`` on its filesystem, or the last write failed for lack of space.
        The readiness probe reports it and the HTTP API refuses writes with it."""
        free = space.low_on_space(self.path.parent)
        if free is not None:
            return space.describe(self.path.parent, free)
        # Here the filesystem has room. A failure seen while it had none is over (space was
        # freed); one seen with room (a quota statvfs cannot see, a write bigger than the
        # floor) still counts for a while.
        if (
            self.full_reason is not None
            and not self._full_low
            and time.monotonic() - self._full_at < FULL_MEMORY
        ):
            return self.full_reason
        with self._lock:
            self._maybe_share(force=True)
        return None

    def _maybe_share(self, *, force: bool = False) -> None:
        """Reopen a store opened exclusively on a full disk once there is room again, so
        the CLI (status, apply) can use the file; tried at most every few seconds."""
        if not self._exclusive or (not force and time.monotonic() < self._next_reopen):
            return
        self._next_reopen = time.monotonic() + 5.0
        if space.low_on_space(self.path.parent) is not None:
            return
        # The exclusive connection holds the file lock: it must go before a shared one can
        # read. If the shared open fails after all, the exclusive one comes back.
        self._conn.close()
        try:
            self._conn = dbfile.connect(self.path)
            self._exclusive = False
            log.info("store reopened for sharing: space is back", extra={"device": self.device_id})
        except sqlite3.Error:
            try:
                self._conn = dbfile.connect_on_any_disk(self.path)
            except sqlite3.Error as exc:
                raise _store_error(exc, "cannot reopen the store: ") from exc
            self._exclusive = dbfile.is_exclusive(self._conn)

    def _rollback(self) -> None:
        # SQLite rolls back by itself on some errors (SQLITE_FULL, SQLITE_IOERR, ...); a
        # second ROLLBACK would then raise and hide the real error.
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed", extra={"device": self.device_id})

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                cur = self._conn.execute(sql, params)
                cols = [d[0] for d in cur.description]
                return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
            except sqlite3.Error as exc:
                raise _store_error(exc) from exc

    @staticmethod
    def _next(c: sqlite3.Connection, name: str) -> int:
        row = c.execute(
            "UPDATE sequences SET value = value + 1 WHERE name = ? RETURNING value", (name,)
        ).fetchone()
        if row is None:
            raise StoreError(f"sequence {name!r} missing")
        return int(row[0])

    def _outbox(self, c: sqlite3.Connection, kind: str, payload: Any, now: float) -> int:
        text = _dumps(payload)
        seq = self._next(c, "outbox")
        c.execute(
            "INSERT INTO outbox (seq, kind, payload, size, created_at) VALUES (?, ?, ?, ?, ?)",
            (seq, kind, text, len(text.encode()), now),
        )
        return seq

    def _event(
        self,
        c: sqlite3.Connection,
        kind: str,
        message: str,
        severity: str,
        data: dict[str, Any] | None,
        now: float,
    ) -> int:
        if severity not in SEVERITIES:
            raise StoreError(f"event severity must be one of {SEVERITIES}, got {severity!r}")
        seq = self._next(c, "events")
        mono = time.monotonic()
        data_text = None if data is None else _dumps(data)
        c.execute(
            "INSERT INTO events (seq, kind, severity, message, data, ts, mono) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, kind, severity, message, data_text, now, mono),
        )
        self._outbox(
            c,
            "event",
            {
                "seq": seq,
                "kind": kind,
                "severity": severity,
                "message": message,
                "data": data,
                "ts": now,
                "mono": mono,
            },
            now,
        )
        return seq

    def data_version(self) -> int:
        """Changes whenever another connection (e.g. ``signalbeam-agent apply``) commits."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def identity(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self._read("SELECT key, value FROM identity")}

    # ---------------------------------------------------------------- events (Recorder)

    def event(
        self,
        kind: str,
        message: str,
        *,
        severity: Severity = "info",
        data: dict[str, Any] | None = None,
    ) -> int:
        with self._tx() as c:
            seq = self._event(c, kind, message, severity, data, time.time())
        log.log(
            logging.WARNING if severity in ("warning", "error") else logging.DEBUG,
            "event %s: %s",
            kind,
            message,
            extra={"device": self.device_id, "seq": seq},
        )
        return seq

    def events(self, after_seq: int | None = None, limit: int = 100) -> list[EventRow]:
        """Events after ``after_seq`` (oldest first); with ``None``, the newest ``limit``."""
        limit = max(0, min(int(limit), 10_000))
        if after_seq is None:
            rows = self._read(
                "SELECT * FROM (SELECT * FROM events ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                (limit,),
            )
        else:
            rows = self._read(
                "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (int(after_seq), limit)
            )
        return [
            EventRow(
                r["seq"],
                r["kind"],
                r["severity"],
                r["message"],
                _loads(r["data"]),
                r["ts"],
                r["mono"],
            )
            for r in rows
        ]

    def last_event_seq(self) -> int:
        rows = self._read("SELECT max(seq) AS s FROM events")
        return int(rows[0]["s"] or 0)

    # ---------------------------------------------------------------- journal (Recorder)

    def journal_begin(self, generation: int, trigger: str, plan: list[dict[str, Any]]) -> int:
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO journal_runs (generation, trigger, plan, started_at) VALUES (?, ?, ?, ?)",
                (generation, trigger, _dumps(plan), time.time()),
            )
            return int(cur.lastrowid or 0)

    def journal_step(
        self,
        run_id: int,
        index: int,
        step: dict[str, Any],
        status: Literal["started", "done", "failed", "skipped"],
        error: str | None = None,
    ) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO journal_steps (run_id, idx, step, status, error, ts) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, index, _dumps(step), status, error, time.time()),
            )

    def journal_end(
        self, run_id: int, result: Literal["succeeded", "failed", "noop"], reason: str | None
    ) -> None:
        now = time.time()
        with self._tx() as c:
            row = c.execute(
                "SELECT generation, trigger, started_at FROM journal_runs WHERE id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"journal run {run_id} does not exist")
            c.execute(
                "UPDATE journal_runs SET finished_at = ?, result = ?, reason = ? WHERE id = ?",
                (now, result, reason, run_id),
            )
            # A no-op run every minute would be most of the upstream bytes and tells the hub
            # nothing; only runs that changed something (or failed) travel.
            if result != "noop":
                steps = c.execute(
                    "SELECT count(*) FROM journal_steps WHERE run_id = ?", (run_id,)
                ).fetchone()[0]
                self._outbox(
                    c,
                    "reconcile",
                    {
                        "run_id": run_id,
                        "generation": row[0],
                        "trigger": row[1],
                        "result": result,
                        "reason": reason,
                        "started_at": row[2],
                        "finished_at": now,
                        "steps": steps,
                    },
                    now,
                )

    def journal(self, limit: int = 20) -> list[JournalRun]:
        """The newest ``limit`` reconcile runs, newest first, each with its steps."""
        limit = max(0, min(int(limit), 1000))
        runs = self._read("SELECT * FROM journal_runs ORDER BY id DESC LIMIT ?", (limit,))
        if not runs:
            return []
        ids = [r["id"] for r in runs]
        marks = ",".join("?" * len(ids))
        steps: dict[int, list[JournalStep]] = {i: [] for i in ids}
        for s in self._read(
            f"SELECT * FROM journal_steps WHERE run_id IN ({marks}) ORDER BY id", tuple(ids)
        ):
            steps[s["run_id"]].append(
                JournalStep(s["idx"], _loads(s["step"]), s["status"], s["error"], s["ts"])
            )
        return [
            JournalRun(
                r["id"],
                r["generation"],
                r["trigger"],
                _loads(r["plan"]),
                r["started_at"],
                r["finished_at"],
                r["result"],
                r["reason"],
                tuple(steps[r["id"]]),
            )
            for r in runs
        ]

    # ---------------------------------------------------------------- deployments (Recorder)

    @staticmethod
    def _deployment_payload(d: Deployment) -> dict[str, Any]:
        # source and spec_hash make the row name its exact revision: a local override and a
        # hub revision may carry the same generation (agent.precedence).
        return {
            "generation": d.generation,
            "source": d.source,
            "spec_hash": d.spec_hash,
            "bundle_ref": d.bundle_ref,
            "status": d.status,
            "reason": d.reason,
            "started_at": d.started_at,
            "finished_at": d.finished_at,
        }

    @staticmethod
    def _row_to_deployment(r: Mapping[str, Any]) -> Deployment:
        return Deployment(
            generation=r["generation"],
            bundle_ref=r["bundle_ref"],
            spec=_loads(r["spec"]),
            status=r["status"],
            reason=r["reason"],
            started_at=r["started_at"],
            finished_at=r["finished_at"],
            source=r["source"],
            spec_hash=r["spec_hash"],
            seq=r["seq"],
        )

    @staticmethod
    def _deployment_seq(c: sqlite3.Connection) -> int:
        return int(c.execute("SELECT coalesce(max(seq), 0) + 1 FROM deployments").fetchone()[0])

    def deployment_begin(
        self, revision: Revision, bundle_ref: str | None, spec: dict[str, Any] | None
    ) -> None:
        if revision.source not in SOURCES:
            raise StoreError(f"deployment source must be one of {SOURCES}")
        now = time.time()
        with self._tx() as c:
            seq = self._deployment_seq(c)
            c.execute(
                "INSERT INTO deployments (generation, source, spec_hash, seq, bundle_ref, spec,"
                " status, started_at) VALUES (?, ?, ?, ?, ?, ?, 'applying', ?)",
                (revision.generation, revision.source, revision.spec_hash, seq, bundle_ref,
                 None if spec is None else _dumps(spec), now),
            )  # fmt: skip
            d = Deployment(
                revision.generation, bundle_ref, spec, "applying", None, now, None,
                revision.source, revision.spec_hash, seq,
            )  # fmt: skip
            self._outbox(c, "deployment", self._deployment_payload(d), now)

    _BY_REVISION = (
        "SELECT * FROM deployments WHERE source = ? AND generation = ? AND spec_hash = ?"
        " ORDER BY id DESC LIMIT 1"
    )

    def deployment_set(
        self, revision: Revision, status: DeploymentStatus, reason: str | None
    ) -> None:
        if status not in DEPLOYMENT_STATUSES:
            raise StoreError(f"deployment status must be one of {DEPLOYMENT_STATUSES}")
        now = time.time()
        key = (revision.source, revision.generation, revision.spec_hash)
        with self._tx() as c:
            row = c.execute(self._BY_REVISION.replace("*", "id"), key).fetchone()
            if row is None:
                raise StoreError(f"no deployment for {revision.describe()}")
            finished = None if status == "applying" else now
            c.execute(
                "UPDATE deployments SET status = ?, reason = ?, finished_at = ?, seq = ?"
                " WHERE id = ?",
                (status, reason, finished, self._deployment_seq(c), row[0]),
            )
            cur = c.execute("SELECT * FROM deployments WHERE id = ?", (row[0],))
            cols = [d[0] for d in cur.description]
            d = self._row_to_deployment(dict(zip(cols, cur.fetchone(), strict=True)))
            self._outbox(c, "deployment", self._deployment_payload(d), now)

    def deployment(self, revision: Revision) -> Deployment | None:
        rows = self._read(
            self._BY_REVISION, (revision.source, revision.generation, revision.spec_hash)
        )
        return self._row_to_deployment(rows[0]) if rows else None

    def last_healthy_deployment(self, *, other_than: Revision | None = None) -> Deployment | None:
        """The deployment most recently written as healthy, optionally not ``other_than``."""
        if other_than is None:
            rows = self._read(
                "SELECT * FROM deployments WHERE status = 'healthy' ORDER BY seq DESC LIMIT 1"
            )
        else:
            rows = self._read(
                "SELECT * FROM deployments WHERE status = 'healthy'"
                " AND NOT (source = ? AND generation = ? AND spec_hash = ?)"
                " ORDER BY seq DESC LIMIT 1",
                (other_than.source, other_than.generation, other_than.spec_hash),
            )
        return self._row_to_deployment(rows[0]) if rows else None

    def latest_deployment(self) -> Deployment | None:
        """The deployment written last: what the device reports as its deployment."""
        rows = self._read("SELECT * FROM deployments ORDER BY seq DESC, id DESC LIMIT 1")
        return self._row_to_deployment(rows[0]) if rows else None

    def deployments(self, limit: int = 20) -> list[Deployment]:
        rows = self._read("SELECT * FROM deployments ORDER BY id DESC LIMIT ?", (int(limit),))
        return [self._row_to_deployment(r) for r in rows]

    # ---------------------------------------------------------------- observed (Recorder)

    def save_observed(self, containers: list[dict[str, Any]]) -> None:
        """Replace the snapshot; an outbox row is written only when it actually changed."""
        ordered = sorted(containers, key=lambda d: str(d.get("name", "")))
        text = _dumps(ordered)
        digest = hashlib.sha256(text.encode()).hexdigest()
        now = time.time()
        with self._tx() as c:
            row = c.execute("SELECT value FROM meta WHERE key = 'observed_hash'").fetchone()
            if row is not None and row[0] == digest:
                return
            c.execute("DELETE FROM observed_containers")
            c.executemany(
                "INSERT INTO observed_containers (position, name, data, updated_at) "
                "VALUES (?, ?, ?, ?)",
                [(i, d.get("name"), _dumps(d), now) for i, d in enumerate(ordered)],
            )
            c.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('observed_hash', ?)", (digest,)
            )
            self._outbox(c, "observed", {"containers": ordered, "ts": now}, now)

    def observed(self) -> list[dict[str, Any]]:
        rows = self._read("SELECT data FROM observed_containers ORDER BY position")
        return [json.loads(r["data"]) for r in rows]

    # ---------------------------------------------------------------- desired state

    def put_desired(self, desired: DesiredState) -> bool:
        """Store a received revision; False if this (source, generation) is already stored.

        A hub revision that ends a local override (``agent.precedence.effective``: the top
        hub revision arrived after it) marks it cleared, with an event saying so.
        """
        if desired.source not in SOURCES:
            raise StoreError(f"desired source must be 'hub' or 'local', got {desired.source!r}")
        now = time.time()
        with self._tx() as c:
            if c.execute(
                "SELECT 1 FROM desired_revisions WHERE source = ? AND generation = ?",
                (desired.source, desired.generation),
            ).fetchone():
                return False
            before = effective(self._precedence_rows(c))
            self._insert_desired(c, desired, now)
            after = effective(self._precedence_rows(c))
            if (
                desired.source == "hub"
                and before is not None
                and before.source == "local"
                and after is not None
                and after.source == "hub"
            ):
                self._clear_local(c, f"hub generation {desired.generation}", now)
        return True

    @staticmethod
    def _precedence_rows(c: sqlite3.Connection) -> list[Stored]:
        """The stored revisions the rule can pick from: local overrides not cleared and the
        top hub revision. No other row can be chosen, nor change the answer, so the rule
        answers the same on this subset as on the whole table."""
        rows = c.execute(
            "SELECT id, source, generation, cleared_at FROM desired_revisions"
            " WHERE (source = 'local' AND cleared_at IS NULL)"
            " OR id = (SELECT id FROM desired_revisions WHERE source = 'hub'"
            "          ORDER BY generation DESC, id DESC LIMIT 1)"
        ).fetchall()
        return [Stored(r[0], r[1], r[2], r[3] is not None) for r in rows]

    def put_local_desired(
        self,
        spec: dict[str, Any] | None,
        *,
        content_hash: str | None = None,
        actor: str = "cli",
    ) -> DesiredState:
        """Record a field override; allocates its generation above every one seen so far."""
        now = time.time()
        with self._tx() as c:
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
            self._insert_desired(c, desired, now, actor=actor)
        return desired

    def clear_local_desired(self, *, actor: str = "cli") -> bool:
        """Drop the local override (if any); the hub's desired state applies again."""
        now = time.time()
        with self._tx() as c:
            return self._clear_local(c, f"cleared by {actor}", now)

    def _clear_local(self, c: sqlite3.Connection, why: str, now: float) -> bool:
        rows = c.execute(
            "SELECT id, generation FROM desired_revisions WHERE source = 'local' "
            "AND cleared_at IS NULL"
        ).fetchall()
        if not rows:
            return False
        c.execute(
            "UPDATE desired_revisions SET cleared_at = ?, cleared_by = ? "
            "WHERE source = 'local' AND cleared_at IS NULL",
            (now, why),
        )
        gens = [r[1] for r in rows]
        self._event(
            c,
            "desired.local_cleared",
            f"local override cleared ({why})",
            "info",
            {"generations": gens, "why": why},
            now,
        )
        return True

    def _insert_desired(
        self, c: sqlite3.Connection, d: DesiredState, now: float, actor: str | None = None
    ) -> None:
        ref = _bundle_ref(d.spec)
        c.execute(
            "INSERT INTO desired_revisions (generation, source, spec, content_hash, rollout_id, "
            "bundle_ref, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                d.generation,
                d.source,
                None if d.spec is None else _dumps(d.spec),
                d.content_hash,
                d.rollout_id,
                ref,
                now,
            ),
        )
        payload: dict[str, Any] = {
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
        self._outbox(c, "desired", payload, now)
        what = ref or "no bundle"
        self._event(
            c,
            "desired.changed",
            f"desired generation {d.generation} ({what}) from {d.source}"
            + (f" by {actor}" if actor else ""),
            "info",
            {k: v for k, v in payload.items() if k != "spec"},
            now,
        )

    def current_desired(self) -> DesiredState | None:
        """The document to reconcile to, by ``agent.precedence.effective``: an uncleared
        local override, else the newest hub revision."""
        with self._lock:
            try:
                chosen = effective(self._precedence_rows(self._conn))
            except sqlite3.Error as exc:
                raise _store_error(exc) from exc
        if chosen is None:
            return None
        rows = self._read("SELECT * FROM desired_revisions WHERE id = ?", (chosen.order,))
        if not rows:
            return None
        r = rows[0]
        return DesiredState(
            generation=r["generation"],
            spec=_loads(r["spec"]),
            source=r["source"],
            rollout_id=r["rollout_id"],
            content_hash=r["content_hash"],
        )

    def desired_revisions(self, limit: int = 20) -> list[DesiredRevision]:
        rows = self._read(
            "SELECT * FROM desired_revisions ORDER BY id DESC LIMIT ?", (max(0, int(limit)),)
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
            for r in rows
        ]

    # ---------------------------------------------------------------- metrics

    def record_samples(self, ts: float, values: Mapping[str, float]) -> int:
        """Store one round of raw samples (they never leave the device)."""
        rows = [(ts, k, float(v)) for k, v in values.items() if v is not None]
        if not rows:
            return 0
        with self._tx() as c:
            c.executemany("INSERT INTO metric_samples (ts, metric, value) VALUES (?, ?, ?)", rows)
        return len(rows)

    def rollup(self, now: float | None = None) -> int:
        """Fold finished minutes into ``metrics_1m`` (each with its outbox row) and finished
        hours into ``metrics_1h``. Returns the number of 1-minute buckets written.

        Watermarks in ``meta`` make this safe to call any time, any number of times: a bucket
        is folded once, and a bucket that already exists is merged, never overwritten.
        """
        now = time.time() if now is None else now
        with self._tx() as c:
            written = self._rollup_minutes(c, ru.bucket_start(now, ru.MINUTE), now)
            self._rollup_hours(c, ru.bucket_start(now, ru.HOUR))
        return written

    @staticmethod
    def _meta_float(c: sqlite3.Connection, key: str) -> float | None:
        row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else float(row[0])

    @staticmethod
    def _set_meta(c: sqlite3.Connection, key: str, value: Any) -> None:
        c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    def _rollup_minutes(self, c: sqlite3.Connection, cutoff: int, now: float) -> int:
        wm = self._meta_float(c, "rollup_1m_through")
        if wm is None:
            first = c.execute("SELECT min(ts) FROM metric_samples").fetchone()[0]
            if first is None:
                return 0
            wm = ru.bucket_start(first, ru.MINUTE)
        if cutoff <= wm:
            return 0
        samples = c.execute(
            "SELECT ts, metric, value FROM metric_samples WHERE ts >= ? AND ts < ?", (wm, cutoff)
        ).fetchall()
        new = ru.fold_samples(samples, ru.MINUTE)
        merged = self._merge_existing(c, "metrics_1m", new)
        self._write_buckets(c, "metrics_1m", merged)
        by_bucket: dict[int, dict[str, list[float]]] = {}
        for (start, metric), agg in sorted(merged.items()):
            by_bucket.setdefault(start, {})[metric] = [
                ru.wire_number(agg.min),
                ru.wire_number(agg.avg),
                ru.wire_number(agg.max),
                agg.count,
            ]
        for start, metrics in sorted(by_bucket.items()):
            self._outbox(c, "metrics.1m", {"bucket": start, "metrics": metrics}, now)
        self._set_meta(c, "rollup_1m_through", cutoff)
        return len(by_bucket)

    def _rollup_hours(self, c: sqlite3.Connection, cutoff: int) -> None:
        wm = self._meta_float(c, "rollup_1h_through")
        if wm is None:
            first = c.execute("SELECT min(bucket) FROM metrics_1m").fetchone()[0]
            if first is None:
                return
            wm = ru.bucket_start(first, ru.HOUR)
        if cutoff <= wm:
            return
        rows = c.execute(
            "SELECT bucket, metric, min, avg, max, count FROM metrics_1m "
            "WHERE bucket >= ? AND bucket < ?",
            (wm, cutoff),
        ).fetchall()
        new = ru.fold_buckets(
            ((b, m, ru.Agg.from_stored(mn, av, mx, n)) for b, m, mn, av, mx, n in rows),
            ru.HOUR,
        )
        self._write_buckets(c, "metrics_1h", self._merge_existing(c, "metrics_1h", new))
        self._set_meta(c, "rollup_1h_through", cutoff)

    @staticmethod
    def _merge_existing(
        c: sqlite3.Connection, table: str, new: dict[tuple[int, str], ru.Agg]
    ) -> dict[tuple[int, str], ru.Agg]:
        if not new:
            return new
        lo = min(k[0] for k in new)
        hi = max(k[0] for k in new)
        existing = {
            (b, m): ru.Agg.from_stored(mn, av, mx, n)
            for b, m, mn, av, mx, n in c.execute(
                f"SELECT bucket, metric, min, avg, max, count FROM {table} "
                "WHERE bucket >= ? AND bucket <= ?",
                (lo, hi),
            )
        }
        return ru.merge_into(existing, new)

    @staticmethod
    def _write_buckets(
        c: sqlite3.Connection, table: str, buckets: dict[tuple[int, str], ru.Agg]
    ) -> None:
        c.executemany(
            f"INSERT OR REPLACE INTO {table} (bucket, metric, min, avg, max, count) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(b, m, a.min, a.avg, a.max, a.count) for (b, m), a in buckets.items()],
        )

    def metrics(
        self,
        resolution: Resolution = "1m",
        since: float | None = None,
        until: float | None = None,
        metric: str | None = None,
        limit: int = 100_000,
    ) -> list[MetricPoint]:
        """Points in ``[since, until)``, oldest first."""
        lo = -1e18 if since is None else float(since)
        hi = 1e18 if until is None else float(until)
        params: tuple[Any, ...]
        if resolution == "raw":
            sql = "SELECT ts, metric, value FROM metric_samples WHERE ts >= ? AND ts < ?"
            params = (lo, hi)
            if metric is not None:
                sql += " AND metric = ?"
                params += (metric,)
            rows = self._read(sql + " ORDER BY ts, metric LIMIT ?", (*params, int(limit)))
            return [
                MetricPoint(r["ts"], r["metric"], r["value"], r["value"], r["value"], 1)
                for r in rows
            ]
        if resolution not in ("1m", "1h"):
            raise StoreError(f"resolution must be raw, 1m or 1h, got {resolution!r}")
        table = "metrics_1m" if resolution == "1m" else "metrics_1h"
        sql = f"SELECT * FROM {table} WHERE bucket >= ? AND bucket < ?"
        params = (lo, hi)
        if metric is not None:
            sql += " AND metric = ?"
            params += (metric,)
        rows = self._read(sql + " ORDER BY bucket, metric LIMIT ?", (*params, int(limit)))
        return [
            MetricPoint(r["bucket"], r["metric"], r["min"], r["avg"], r["max"], r["count"])
            for r in rows
        ]

    def metrics_next(
        self, resolution: Resolution, at_or_after: float, metric: str | None = None
    ) -> float | None:
        """The time of the first point at or after ``at_or_after`` (None: there is none).

        One indexed lookup (``ts`` / the ``(bucket, metric)`` key), so a reader walking a
        window in chunks can jump over empty stretches instead of asking for each of them.
        """
        if resolution == "raw":
            table, col = "metric_samples", "ts"
        elif resolution in ("1m", "1h"):
            table, col = ("metrics_1m" if resolution == "1m" else "metrics_1h"), "bucket"
        else:
            raise StoreError(f"resolution must be raw, 1m or 1h, got {resolution!r}")
        sql = f"SELECT min({col}) AS t FROM {table} WHERE {col} >= ?"
        params: tuple[Any, ...] = (float(at_or_after),)
        if metric is not None:
            sql += " AND metric = ?"
            params += (metric,)
        t = self._read(sql, params)[0]["t"]
        return None if t is None else float(t)

    def latest_samples(self) -> dict[str, float]:
        rows = self._read(
            "SELECT metric, value FROM metric_samples "
            "WHERE ts = (SELECT max(ts) FROM metric_samples)"
        )
        return {r["metric"]: r["value"] for r in rows}

    # ---------------------------------------------------------------- outbox (sync)

    def outbox_pending(self, limit: int = 100, max_bytes: int = 1_000_000) -> list[OutboxRow]:
        """The oldest unsent rows, in sequence order, within ``limit`` rows and ``max_bytes``
        of payload (at least one row, so a large row cannot block the queue)."""
        rows = self._read(
            "SELECT seq, kind, payload, size, created_at FROM outbox WHERE sent_at IS NULL "
            "ORDER BY seq LIMIT ?",
            (max(1, int(limit)),),
        )
        out: list[OutboxRow] = []
        total = 0
        for r in rows:
            if out and total + r["size"] > max_bytes:
                break
            total += r["size"]
            out.append(OutboxRow(r["seq"], r["kind"], r["payload"], r["size"], r["created_at"]))
        return out

    def outbox_epoch(self) -> str | None:
        """This store's outbox epoch (``identity.sync_epoch``); None for a store made by an
        agent from before epochs (its numbering never started again)."""
        rows = self._read("SELECT value FROM identity WHERE key = 'sync_epoch'")
        return str(rows[0]["value"]) if rows else None

    def outbox_mark_sent(self, up_to_seq: int) -> int:
        """Mark every unsent row with ``seq <= up_to_seq`` sent; returns how many."""
        with self._tx() as c:
            cur = c.execute(
                "UPDATE outbox SET sent_at = ? WHERE sent_at IS NULL AND seq <= ?",
                (time.time(), int(up_to_seq)),
            )
            return cur.rowcount

    def outbox_depth(self) -> int:
        return int(self._read("SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL")[0]["n"])

    def outbox_stats(self) -> dict[str, Any]:
        # One statement, so one snapshot: the heartbeat sends ``pending`` and ``last_seq``,
        # and the hub takes "nothing pending up to last_seq" as the device's word that every
        # row up to there reached the stream (a row committed between two reads would make
        # that claim false).
        r = self._read(
            "SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes, min(created_at) AS oldest, "
            "min(seq) AS first_seq, max(seq) AS last_seq, "
            "(SELECT value FROM sequences WHERE name = 'outbox') AS counter "
            "FROM outbox WHERE sent_at IS NULL"
        )[0]
        return {
            "pending": r["n"],
            "bytes": r["bytes"],
            "oldest_created_at": r["oldest"],
            "first_pending_seq": r["first_seq"],
            "last_pending_seq": r["last_seq"],
            "last_seq": int(r["counter"] or 0),
        }

    def enforce_outbox_bounds(
        self, *, max_bytes: int, max_age: float, now: float | None = None
    ) -> int:
        """Drop unsent rows beyond the bounds (see ``outbox_policy``); returns rows dropped.

        The drop and the event announcing it (with the exact sequence ranges, so the hub can
        tell an announced gap from a lost message) commit together.
        """
        now = time.time() if now is None else now
        with self._tx() as c:
            infos = [
                PendingInfo(*r)
                for r in c.execute(
                    "SELECT seq, kind, size, created_at FROM outbox WHERE sent_at IS NULL"
                )
            ]
            drops = choose_drops(infos, max_bytes=max_bytes, max_age=max_age, now=now)
            if not drops:
                return 0
            kinds: dict[str, int] = {}
            by_seq = {i.seq: i for i in infos}
            for s in drops:
                kinds[by_seq[s].kind] = kinds.get(by_seq[s].kind, 0) + 1
            c.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in drops])
            ranges = seq_ranges(drops)
            severity = "warning" if set(kinds) <= {"metrics.1m", "observed"} else "error"
            self._event(
                c,
                "outbox.dropped",
                f"offline too long: dropped {len(drops)} unsent outbox rows "
                + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
                severity,
                {
                    "count": len(drops),
                    "kinds": kinds,
                    "ranges": ranges[:MAX_DROP_RANGES],
                    "ranges_truncated": len(ranges) > MAX_DROP_RANGES,
                    "max_bytes": max_bytes,
                    "max_age": max_age,
                },
                now,
            )
        return len(drops)

    # ---------------------------------------------------------------- retention

    def prune(
        self,
        *,
        raw: float,
        minute: float,
        hour: float,
        outbox_max_bytes: int,
        outbox_max_age: float,
        now: float | None = None,
    ) -> dict[str, int]:
        """Apply retention to metrics, sent outbox rows and old journal runs, then the outbox
        bounds. Events are the append-only device log and are never pruned here."""
        now = time.time() if now is None else now
        out: dict[str, int] = {}
        with self._tx() as c:
            out["raw"] = c.execute("DELETE FROM metric_samples WHERE ts < ?", (now - raw,)).rowcount
            out["1m"] = c.execute(
                "DELETE FROM metrics_1m WHERE bucket < ?", (now - minute,)
            ).rowcount
            out["1h"] = c.execute("DELETE FROM metrics_1h WHERE bucket < ?", (now - hour,)).rowcount
            out["sent"] = c.execute(
                "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?",
                (now - SENT_RETENTION,),
            ).rowcount
            old_runs = (
                "SELECT id FROM journal_runs WHERE started_at < ? AND finished_at IS NOT NULL"
            )
            c.execute(
                f"DELETE FROM journal_steps WHERE run_id IN ({old_runs})",
                (now - JOURNAL_RETENTION,),
            )
            out["journal"] = c.execute(
                "DELETE FROM journal_runs WHERE started_at < ? AND finished_at IS NOT NULL",
                (now - JOURNAL_RETENTION,),
            ).rowcount
        out["outbox_dropped"] = self.enforce_outbox_bounds(
            max_bytes=outbox_max_bytes, max_age=outbox_max_age, now=now
        )
        return out

    # ---------------------------------------------------------------- status

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
                "bundle_ref": _bundle_ref(desired.spec),
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
