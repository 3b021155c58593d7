"""The hub's health and metrics endpoints, served by aiohttp on a loopback test server."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from hub.http import make_app
from hub.metrics import HubMetrics


async def test_live_ready_and_metrics() -> None:
    metrics = HubMetrics()
    problems: list[str] = []
    scrapes: list[int] = []

    async def readiness() -> list[str]:
        return list(problems)

    async def before_scrape() -> None:
        scrapes.append(1)
        metrics.set_device_counts({"online": 3})

    async with TestClient(TestServer(make_app(metrics, readiness, before_scrape))) as client:
        assert (await client.get("/health/live")).status == 200
        resp = await client.get("/health/ready")
        assert resp.status == 200 and await resp.json() == {"status": "ready"}
        problems.append("nats-server is not running")
        resp = await client.get("/health/ready")
        body = await resp.json()
        assert resp.status == 503
        assert body["error"]["code"] == "unavailable"
        assert body["error"]["details"] == ["nats-server is not running"]
        metrics.observe_api("devices.list", "ok", 0.002)
        text = await (await client.get("/metrics")).text()
        assert 'signalbeam_devices{status="online"} 3.0' in text
        assert 'signalbeam_api_requests_total{code="ok",verb="devices.list"} 1.0' in text
        assert scrapes == [1]
