"""The SQLite core the agent and hub share (sbutil.sqlite): pragmas, transactions, the
translation seam, the migrations runner and the thread rule (read/write on one worker)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from sbutil import sqlite
from sbutil.sqlite.database import Stage


def test_connect_sets_the_pragmas(tmp_path: Path) -> None:
    c = sqlite.connect(tmp_path / "x.db", cache_kib=1024)
    try:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert c.execute("PRAGMA busy_timeout").fetchone()[0] == sqlite.BUSY_TIMEOUT_MS
        assert c.execute("PRAGMA cache_size").fetchone()[0] == -1024
        assert c.isolation_level is None
        assert (tmp_path / "x.db").stat().st_mode & 0o077 == 0
    finally:
        c.close()


def test_require_wal_refuses_a_file_that_cannot_be_wal() -> None:
    with pytest.raises(sqlite3.OperationalError, match="WAL"):
        sqlite.connect(":memory:")
    sqlite.connect(":memory:", require_wal=False).close()


@pytest.fixture
def db(tmp_path: Path) -> sqlite.Database:
    d = sqlite.Database(sqlite.connect(tmp_path / "t.db"))
    d.conn.execute("CREATE TABLE t (v INTEGER NOT NULL)")
    return d


def test_nested_writes_join_the_outer_transaction(db: sqlite.Database) -> None:
    def fail(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES (1)")
        db.write_now(lambda c2: c2.execute("INSERT INTO t VALUES (2)"))
        assert db.depth == 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        db.write_now(fail)
    assert db.depth == 0 and not db.conn.in_transaction
    assert sqlite.scalar(db.conn, "SELECT count(*) FROM t") == 0
    db.write_now(lambda c: c.execute("INSERT INTO t VALUES (3)"))
    assert sqlite.rows(db.conn, "SELECT v FROM t") == [{"v": 3}]


def test_translate_words_sqlite_errors_by_stage(tmp_path: Path) -> None:
    seen: list[Stage] = []

    def translate(exc: sqlite3.Error, stage: Stage) -> BaseException:
        seen.append(stage)
        return ValueError(f"{stage}: {exc}")

    d = sqlite.Database(sqlite.connect(tmp_path / "t.db"), translate=translate)
    with pytest.raises(ValueError, match="write: no such table"):
        d.write_now(lambda c: c.execute("INSERT INTO nowhere VALUES (1)"))
    with pytest.raises(ValueError, match="read: no such table"):
        d.read_now(lambda c: c.execute("SELECT * FROM nowhere"))
    # A write lock held elsewhere: BEGIN IMMEDIATE cannot start.
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    d.conn.execute("PRAGMA busy_timeout=0")
    with pytest.raises(ValueError, match="begin: database is locked"):
        d.write_now(lambda c: None)
    other.execute("ROLLBACK")
    assert seen == ["write", "read", "begin"]
    d.close()
    other.close()


def test_migrate_applies_each_step_once_and_refuses_newer(tmp_path: Path) -> None:
    conn = sqlite.connect(tmp_path / "m.db")
    steps: list[sqlite.Migration] = [
        (1, "table", "CREATE TABLE a (x INTEGER);\n-- a comment\nCREATE INDEX a_x ON a(x);"),
        (2, "row", lambda c: c.execute("INSERT INTO a VALUES (7)")),
    ]
    assert sqlite.migrate(conn, steps, stamp=lambda: 1.5, applied_at_type="REAL") == [1, 2]
    assert sqlite.migrate(conn, steps, stamp=lambda: 2.5, applied_at_type="REAL") == []
    assert sqlite.applied_versions(conn) == [1, 2]
    assert sqlite.scalar(conn, "SELECT count(*) FROM a") == 1
    cols = {r["name"]: r["type"] for r in sqlite.rows(conn, "PRAGMA table_info(schema_migrations)")}
    assert cols["applied_at"] == "REAL"
    with pytest.raises(LookupError, match=r"\[2\]"):
        sqlite.migrate(conn, steps[:1], stamp=lambda: 0, refuse_newer=lambda v: LookupError(v))
    # A failing step leaves neither its changes nor its record.
    bad: list[sqlite.Migration] = [*steps, (3, "bad", "CREATE TABLE b (x);\nSELECT nope;")]
    with pytest.raises(sqlite3.OperationalError):
        sqlite.migrate(conn, bad, stamp=lambda: 0)
    assert sqlite.applied_versions(conn) == [1, 2]
    assert sqlite.scalar(conn, "SELECT count(*) FROM sqlite_master WHERE name = 'b'") == 0
    conn.close()


def test_statements_keep_trigger_bodies_whole() -> None:
    sql = (
        "CREATE TABLE t (x);\n"
        "CREATE TRIGGER t_no BEFORE UPDATE ON t\n"
        "BEGIN SELECT RAISE(ABORT, 'no'); END;\n"
    )
    assert len(sqlite.statements(sql)) == 2


async def test_read_and_write_run_in_order_on_one_worker_thread(db: sqlite.Database) -> None:
    threads: set[str] = set()

    def add(c: sqlite3.Connection, v: int) -> int:
        threads.add(threading.current_thread().name)
        c.execute("INSERT INTO t VALUES (?)", (v,))
        return v

    def values(c: sqlite3.Connection) -> list[int]:
        threads.add(threading.current_thread().name)
        return [r[0] for r in c.execute("SELECT v FROM t ORDER BY rowid")]

    got = await asyncio.gather(*(db.write(add, i) for i in range(20)), db.read(values))
    assert got[:20] == list(range(20))
    assert got[20] == list(range(20))  # the read was queued after every write
    assert len(threads) == 1 and threading.current_thread().name not in threads
    db.close()
