"""kill -9 the store's writer at random moments, 20 times: every reopen works with no repair
step, sequences stay gapless, every committed event is there exactly once, and each event
has exactly one outbox row."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KILLS = 20

# The writer resumes numbering after the last event it finds, reports each number only after
# the store call returned (committed), and mixes in the other write paths.
WRITER = r"""
import os, sys
from agent.metrics.folding import roll_up
from agent.store import Store
from protocol.desired import DesiredState

path, report = sys.argv[1], sys.argv[2]
store = Store.open(path, device_id="crash-dev")
ticks = [e for e in store.events(limit=20) if e.kind == "tick"]
n = ticks[-1].data["n"] + 1 if ticks else 0
fd = os.open(report, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
for _ in range(100_000):
    store.event("tick", f"tick {n}", data={"n": n})
    os.write(fd, f"{n}\n".encode())
    if n % 7 == 0:
        store.record_samples(n * 10.0, {"cpu": float(n % 100), "mem": 1.0})
        roll_up(store, n * 10.0)
    if n % 11 == 0:
        store.put_desired(DesiredState(n, {"bundle": "b", "version": "1.0", "containers": []}))
    if n % 13 == 0:
        store.save_observed([{"name": "web", "state": "running", "n": n}])
    if n % 17 == 0:
        store.outbox_mark_sent(max(0, n // 2))
    n += 1
"""


@pytest.mark.slow
def test_kill_9_writer_twenty_times(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    report = tmp_path / "committed.txt"
    rnd = random.Random(4)
    for i in range(KILLS):
        before = report.stat().st_size if report.exists() else 0
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(report)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            if i % 2:
                # Blind: may land in start-up, migration or the first writes.
                time.sleep(rnd.uniform(0.01, 0.4))
            else:
                # Mid-stream: once the writer commits, whatever the machine's speed.
                for _ in range(200):
                    if report.exists() and report.stat().st_size > before:
                        break
                    time.sleep(0.05)
                time.sleep(rnd.uniform(0.0, 0.2))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            _, err = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL, err.decode()

    # Reopened by the store itself: no repair step, no corruption event.
    from agent.store import Store

    store = Store.open(db, device_id="crash-dev")
    events = store.events(after_seq=0, limit=10_000)
    assert all(e.kind != "store.corrupt" for e in events)
    store.close()

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        seqs = [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")]
        ticks = [
            json.loads(r[0])["n"]
            for r in conn.execute("SELECT data FROM events WHERE kind='tick' ORDER BY seq")
        ]
        outbox = [r[0] for r in conn.execute("SELECT seq FROM outbox ORDER BY seq")]
        event_rows = [
            json.loads(r[0])["seq"]
            for r in conn.execute("SELECT payload FROM outbox WHERE kind='event' ORDER BY seq")
        ]
    finally:
        conn.close()

    committed = [int(x) for x in report.read_text().split()]
    assert len(ticks) >= KILLS // 2, "the writer never got going"
    assert seqs == list(range(1, len(seqs) + 1)), "event sequence has gaps"
    assert outbox == list(range(1, len(outbox) + 1)), "outbox sequence has gaps"
    assert ticks == list(range(len(ticks))), "a tick is missing or doubled"
    assert set(committed) <= set(ticks), "a reported commit was lost"
    # A kill between commit and report can leave at most one unreported tick per kill.
    assert len(ticks) - len(set(committed)) <= KILLS
    assert event_rows == seqs, "each event must have exactly one outbox row"
