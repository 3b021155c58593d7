"""The sync view a running agent leaves for other processes (``signalbeam-agent status``).

Apart from ``agent.sync.service`` on purpose: reading one JSON file must not import the NATS
client (which imports aiohttp), so ``status`` stays a small, quick process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STATUS_FILE = "sync-status.json"


def read_status_file(data_dir: Path) -> dict[str, Any] | None:
    """The sync view a running agent last wrote (for ``signalbeam-agent status``), or None
    when sync never ran. Its ``written_at`` tells how fresh it is."""
    try:
        doc = json.loads((Path(data_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
