"""The TUI's hub session with several hub URLs (docs/cli.md "Several hub URLs"), against a
real hub: a dead first URL is passed over, the header names the URL in use and how many
others the list holds, and requests go through."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.ports import free_port
from tests.harness.tui import Hub
from tui.hub.session import HubSession


@pytest.fixture
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    h = Hub(tmp_path_factory.mktemp("tuiurls") / "data")
    try:
        yield h
    finally:
        h.stop()


async def test_session_passes_a_dead_url_and_shows_the_one_in_use(hub: Hub) -> None:
    port = hub.url.rsplit(":", 1)[1]
    dead = hub.url.replace(f":{port}", f":{free_port()}")
    session = HubSession(f"{dead},{hub.url}", hub.key, timeout=5)
    try:
        await session.open()
        assert session.connected
        assert session.display_url == f"nats://127.0.0.1:{port} (+1)"
        assert "items" in await session.call("devices.list", {"limit": 1})
    finally:
        await session.close()
    one = HubSession(hub.url, hub.key, timeout=5)
    try:
        await one.open()
        assert one.display_url == f"nats://127.0.0.1:{port}"
    finally:
        await one.close()
