"""The API app without an engine: route/OpenAPI agreement, error shape for aiohttp's own
errors, TLS certificate, and behaviour while the engine is not connected yet."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent.config import AgentConfig
from agent.http.app import ROUTES, build_app
from agent.http.context import AppContext, HttpLimits
from agent.http.openapi import document
from agent.http.page import render
from agent.http.tls import (
    ensure_certificate,
    fingerprint,
    needs_tls,
    server_context,
    stored_fingerprint,
)
from agent.http.tokens import TokenStore
from agent.http.views import status_doc
from agent.store import Store


@pytest.fixture
def ctx(tmp_path: Path) -> AppContext:
    store = Store.open(tmp_path / "agent.db", device_id="unit-dev")
    return AppContext(
        config=AgentConfig(data_dir=tmp_path, device_id="unit-dev"),
        store=store,
        tokens=TokenStore.in_data_dir(tmp_path),
        limits=HttpLimits(client_max_size=1024),
    )


@pytest.fixture
async def client(ctx: AppContext) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_app(ctx))) as c:
        yield c


def _served(ctx: AppContext) -> set[tuple[str, str]]:
    app = build_app(ctx)
    return {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }


def test_every_route_is_documented_and_every_documented_path_served(ctx: AppContext) -> None:
    doc = document()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert _served(ctx) == documented
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            role = next(r for (m, p, _, r) in ROUTES if m == method.upper() and p == path)
            assert bool(op["security"][0]) == (role is not None), (method, path)
            for code, resp in op["responses"].items():
                if code.startswith(("4", "5")):
                    assert resp["$ref"].startswith("#/components/responses/E"), (path, code)
    json.dumps(doc)  # serialisable as served


def test_openapi_document_is_valid() -> None:
    import schemathesis

    schema = schemathesis.openapi.from_dict(document())
    schema.validate()  # against the OpenAPI 3.0 meta-schema
    assert sum(1 for _ in schema.get_all_operations()) == len(ROUTES)


async def test_aiohttp_errors_have_the_one_shape(client: TestClient) -> None:
    for method, path, status, code in [
        ("GET", "/v2/nothing", 404, "not_found"),
        ("PUT", "/v1/status", 405, "method_not_allowed"),
        ("GET", "/v1/status", 401, "unauthorized"),
    ]:
        resp = await client.request(method, path)
        assert resp.status == status
        body = await resp.json()
        assert body["error"]["code"] == code, body


async def test_body_over_the_limit_is_413_in_the_error_shape(
    ctx: AppContext, client: TestClient
) -> None:
    _, admin = ctx.tokens.create("root", "admin", created_by="test")
    resp = await client.post(
        "/v1/tokens",
        data=b"{" + b" " * 4096 + b"}",
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
    )
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "too_large"


async def test_without_an_engine_reads_work_and_engine_calls_say_unavailable(
    ctx: AppContext,
    client: TestClient,
) -> None:
    _, viewer = ctx.tokens.create("v", "viewer", created_by="test")
    _, op = ctx.tokens.create("o", "operator", created_by="test")
    h = {"Authorization": f"Bearer {viewer}"}
    status = await (await client.get("/v1/status", headers=h)).json()
    assert status["device_id"] == "unit-dev" and status["engine"] is None
    assert status["hub"] == {
        "configured": False,
        "online": None,
        "last_contact": None,
        "unreachable_since": None,
    }
    resp = await client.get("/v1/containers", headers=h)
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "unavailable"
    ready = await client.get("/health/ready")
    assert ready.status == 503
    assert (await ready.json())["error"]["details"]["engine"] == "failed: not connected"
    resp = await client.post("/v1/reconcile", headers={"Authorization": f"Bearer {op}"})
    assert resp.status == 503
    # Prometheus falls back to the stored snapshot when the engine is away.
    text = await (await client.get("/metrics", headers=h)).text()
    assert "signalbeam_outbox_pending_rows" in text


async def test_page_escapes_everything(ctx: AppContext) -> None:
    doc = await status_doc(ctx)
    doc["device_id"] = "<script>alert(1)</script>"
    doc["stuck"] = "<b>x</b>"
    html = render(doc)
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;" in html


def test_tls_certificate_generated_once(tmp_path: Path) -> None:
    assert not needs_tls("127.0.0.1") and not needs_tls("::1")
    assert needs_tls("0.0.0.0") and needs_tls("192.168.1.10")
    assert stored_fingerprint(tmp_path) is None
    cert, key = ensure_certificate(tmp_path, "192.168.1.10")
    fp = fingerprint(cert)
    assert len(fp.split(":")) == 32
    assert key.stat().st_mode & 0o077 == 0
    again, _ = ensure_certificate(tmp_path, "192.168.1.10")
    assert fingerprint(again) == fp == stored_fingerprint(tmp_path)
    assert isinstance(server_context(cert, key), ssl.SSLContext)
