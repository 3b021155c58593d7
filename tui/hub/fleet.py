"""How the Fleet view reads devices from a hub of any age: pages of ``devices.list`` (the
summary view where the hub has it), a targeted fetch of some ids, and the ``devices.get``
enrichment an older hub needs. No Textual: the view (``tui/widgets/fleet.py``) decides what
an error means on screen."""

from __future__ import annotations

import asyncio
from typing import Any

from protocol import errors as codes
from tui.client import ApiError
from tui.hub.session import HubSession

PAGE_LIMIT = 1000  # per plain devices.list call (the API's maximum)
SUMMARY_LIMIT = 500  # per summary-view call (the hub's cap for that view)
FETCH_PARALLEL = 8
ENRICH_MAX = 200  # devices.get calls per load when the hub has no summary view


class FleetSource:
    """The hub's device reads, with what this hub turned out not to support remembered."""

    def __init__(self) -> None:
        self.summary_view = True  # cleared when the hub refuses devices.list's "view"
        self.ids_filter = True  # cleared when the hub refuses devices.list's "ids"

    async def page(
        self, session: HubSession, cursor: str | None, include_decommissioned: bool
    ) -> dict[str, Any]:
        """One page of ``devices.list``, enriched when the hub has no summary view; raises
        ``ApiError`` as the hub answered."""
        body: dict[str, Any] = {"limit": PAGE_LIMIT}
        if self.summary_view:
            body.update(view="summary", limit=SUMMARY_LIMIT)
        if include_decommissioned:
            body["include_decommissioned"] = True
        if cursor is not None:
            body["cursor"] = cursor
        try:
            result = await session.call("devices.list", body)
        except ApiError as exc:
            if self.summary_view and exc.code == codes.INVALID and exc.field == "view":
                self.summary_view = False  # an older hub: plain pages plus devices.get
                return await self.page(session, cursor, include_decommissioned)
            raise
        if not self.summary_view:
            await self.enrich(session, result.get("items", []))
        return result

    async def fetch_ids(self, session: HubSession, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The row documents of ``ids`` by id; a device the hub no longer has is absent.
        One ``devices.list`` with ``ids`` (the view's targeted batch is far under its cap); a
        hub without that filter gets one ``devices.get`` per device, a few at a time."""
        if self.ids_filter:
            body: dict[str, Any] = {"ids": ids, "include_decommissioned": True}
            if self.summary_view:
                body.update(view="summary", limit=SUMMARY_LIMIT)
            try:
                result = await session.call("devices.list", body)
            except ApiError as exc:
                if exc.code != codes.INVALID or not (exc.field or "").startswith(("ids", "view")):
                    raise
                self.ids_filter = False  # an older hub
            else:
                docs = {str(d.get("id")): dict(d) for d in result.get("items", [])}
                if not self.summary_view:
                    await self.enrich(session, list(docs.values()))
                return docs
        gate = asyncio.Semaphore(FETCH_PARALLEL)

        async def one(device_id: str) -> dict[str, Any] | None:
            async with gate:
                try:
                    return await session.call("devices.get", {"id": device_id})
                except ApiError as exc:
                    if exc.code == codes.NOT_FOUND:
                        return None
                    raise

        got = await asyncio.gather(*(one(i) for i in ids))
        return {i: d for i, d in zip(ids, got, strict=True) if d is not None}

    async def enrich(self, session: HubSession, items: list[dict[str, Any]]) -> None:
        """Desired and reported state from ``devices.get``, for a hub without the summary
        view (bounded: the first ENRICH_MAX devices of each page)."""
        gate = asyncio.Semaphore(FETCH_PARALLEL)

        async def one(device: dict[str, Any]) -> None:
            async with gate:
                # Quietly: a device decommissioned meanwhile must not spam notifications.
                try:
                    full = await session.call("devices.get", {"id": device["id"]})
                except ApiError:
                    return
            device["desired"] = full.get("desired")
            device["reported"] = full.get("reported")

        await asyncio.gather(*(one(d) for d in items[:ENRICH_MAX] if "desired" not in d))

    async def write_each(
        self, session: HubSession, verb: str, ids: list[str], body: dict[str, Any]
    ) -> list[str]:
        """``verb`` on each device, a few at a time; one "id: error" line per failure."""
        gate = asyncio.Semaphore(FETCH_PARALLEL)

        async def one(device_id: str) -> str | None:
            async with gate:
                try:
                    await session.call(verb, {"id": device_id, **body})
                except ApiError as exc:
                    return f"{device_id}: {exc}"
            return None

        return [f for f in await asyncio.gather(*(one(i) for i in ids)) if f is not None]
