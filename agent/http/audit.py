"""Writing a technician's action to the device event log (and so, via the outbox, the hub)."""

from __future__ import annotations

import logging
from typing import Any

from agent.http.auth import Caller
from agent.http.context import AppContext
from agent.store import Store

log = logging.getLogger(__name__)


async def audit(
    ctx: AppContext,
    who: Caller,
    kind: str,
    message: str,
    data: dict[str, Any] | None = None,
    *,
    severity: str = "info",
) -> int:
    payload = dict(data or {})
    payload.update({"actor": who.actor, "token_id": who.token.id, "via": "http"})
    seq = await ctx.store.write(
        Store.event,
        kind,
        f"{message} (by {who.token.name})",
        severity=severity,  # type: ignore[arg-type]
        data=payload,
    )
    log.info(
        "%s by %s",
        kind,
        who.token.name,
        extra={"device": ctx.device_id, "token_id": who.token.id, "seq": seq},
    )
    return seq
