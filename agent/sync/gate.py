"""Whether hub sync should start yet: ``[hub] url`` is set or a credentials file exists.

Apart from ``agent.sync.service`` on purpose: an agent that was never enrolled waits here
without importing the NATS client (which imports aiohttp), and still notices an enrollment
done beside it (``signalbeam-agent enroll``) within ``ENROLL_POLL`` s, with no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from sbutil.tasks import wait_for

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "hub-credentials.json"
ENROLL_POLL = 5.0  # seconds between looks for a credentials file while not enrolled


def credentials_path(config: Any) -> Path:
    """Where the credentials live for an ``AgentConfig``."""
    configured = getattr(getattr(config, "hub", None), "credentials_file", None)
    return Path(configured) if configured else Path(config.data_dir) / CREDENTIALS_FILE


def sync_configured(config: Any) -> bool:
    """True when sync has something to connect with: a ``[hub] url`` or enrolled credentials."""
    return bool(getattr(config.hub, "url", None)) or credentials_path(config).exists()


async def wait_until_configured(config: Any, stop: asyncio.Event, device_id: str) -> bool:
    """Return True once sync is configured, looking every ``ENROLL_POLL`` s; False when
    ``stop`` is set first. Logs once that sync is off meanwhile."""
    told = False
    while not sync_configured(config):
        if not told:
            log.info(
                "not enrolled and no [hub] url: sync is off until `signalbeam-agent enroll`",
                extra={"device": device_id},
            )
            told = True
        with contextlib.suppress(TimeoutError):
            await wait_for(stop.wait(), ENROLL_POLL)
            return False
    if told:
        log.info("credentials found: starting hub sync", extra={"device": device_id})
    return True
