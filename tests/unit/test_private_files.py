"""Owner-only database files (sbutil.private): SQLite's in-memory database is left alone."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sbutil.private import private_db_files


def test_a_new_db_file_is_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    private_db_files(db)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_in_memory_db_creates_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    private_db_files(Path(":memory:"))
    assert os.listdir(tmp_path) == []
