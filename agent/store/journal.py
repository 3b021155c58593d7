"""The reconcile journal: one run per reconcile pass, its plan and each step's outcome.
A finished run that changed something (or failed) travels upstream as a ``reconcile`` row."""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Literal

from agent.errors import StoreError
from agent.store import outbox
from agent.store.base import StoreBase, dumps, loads, rows
from agent.store.rows import JournalRun, JournalStep
from protocol.reported import RowKind

StepStatus = Literal["started", "done", "failed", "skipped"]
RunResult = Literal["succeeded", "failed", "noop"]


def begin(c: sqlite3.Connection, generation: int, trigger: str, plan: list[dict[str, Any]]) -> int:
    cur = c.execute(
        "INSERT INTO journal_runs (generation, trigger, plan, started_at) VALUES (?, ?, ?, ?)",
        (generation, trigger, dumps(plan), time.time()),
    )
    return int(cur.lastrowid or 0)


def add_step(
    c: sqlite3.Connection,
    run_id: int,
    index: int,
    step: dict[str, Any],
    status: StepStatus,
    error: str | None = None,
) -> None:
    c.execute(
        "INSERT INTO journal_steps (run_id, idx, step, status, error, ts) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (run_id, index, dumps(step), status, error, time.time()),
    )


def end(c: sqlite3.Connection, run_id: int, result: RunResult, reason: str | None) -> None:
    now = time.time()
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
        outbox.append(
            c,
            RowKind.RECONCILE,
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


def runs(c: sqlite3.Connection, limit: int = 20) -> list[JournalRun]:
    """The newest ``limit`` reconcile runs, newest first, each with its steps."""
    limit = max(0, min(int(limit), 1000))
    found = rows(c, "SELECT * FROM journal_runs ORDER BY id DESC LIMIT ?", (limit,))
    if not found:
        return []
    ids = [r["id"] for r in found]
    marks = ",".join("?" * len(ids))
    steps: dict[int, list[JournalStep]] = {i: [] for i in ids}
    for s in rows(
        c, f"SELECT * FROM journal_steps WHERE run_id IN ({marks}) ORDER BY id", tuple(ids)
    ):
        steps[s["run_id"]].append(
            JournalStep(s["idx"], loads(s["step"]), s["status"], s["error"], s["ts"])
        )
    return [
        JournalRun(
            r["id"],
            r["generation"],
            r["trigger"],
            loads(r["plan"]),
            r["started_at"],
            r["finished_at"],
            r["result"],
            r["reason"],
            tuple(steps[r["id"]]),
        )
        for r in found
    ]


class JournalStore(StoreBase):
    def journal_begin(self, generation: int, trigger: str, plan: list[dict[str, Any]]) -> int:
        return self.write_now(begin, generation, trigger, plan)

    def journal_step(
        self,
        run_id: int,
        index: int,
        step: dict[str, Any],
        status: StepStatus,
        error: str | None = None,
    ) -> None:
        self.write_now(add_step, run_id, index, step, status, error)

    def journal_end(self, run_id: int, result: RunResult, reason: str | None) -> None:
        self.write_now(end, run_id, result, reason)

    def journal(self, limit: int = 20) -> list[JournalRun]:
        """The newest ``limit`` reconcile runs, newest first, each with its steps."""
        return self.read_now(runs, limit)
