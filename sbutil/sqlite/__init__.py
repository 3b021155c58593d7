"""The one SQLite core the agent and the hub share: opening a file with the pragmas
(``connect``), rows as dicts (``rows``/``row``/``scalar``), transactions and the thread
rule (``Database``), and the migrations runner (``migrate``). Each side keeps its own schema
(``agent/store/migrations.py``, ``hub/store/migrations.py``) and its own error words."""

from sbutil.sqlite.connect import BUSY_TIMEOUT_MS, connect, row, rows, scalar
from sbutil.sqlite.database import Database, Translate
from sbutil.sqlite.migrate import Migration, applied_versions, ensure_table, migrate, statements

__all__ = [
    "BUSY_TIMEOUT_MS",
    "Database",
    "Migration",
    "Translate",
    "applied_versions",
    "connect",
    "ensure_table",
    "migrate",
    "row",
    "rows",
    "scalar",
    "statements",
]
