"""The API over TLS with its self-signed certificate, on loopback (forced with ``tls=True``,
so no test listens beyond 127.0.0.1): the certificate a client sees is the one whose
fingerprint the agent reports."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from pathlib import Path

import aiohttp

from agent.config import AgentConfig
from agent.http.context import AppContext
from agent.http.server import bound_port, start
from agent.http.tls import cert_paths, stored_fingerprint
from agent.http.tokens import TokenStore
from agent.store import Store


async def _peer_cert(port: int, client_ctx: ssl.SSLContext) -> bytes:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
    try:
        der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return der
    finally:
        writer.close()
        await writer.wait_closed()


async def test_tls_serves_the_reported_certificate(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "agent.db", device_id="tls-dev")
    ctx = AppContext(
        config=AgentConfig(data_dir=tmp_path, device_id="tls-dev"),
        store=store,
        tokens=TokenStore.in_data_dir(tmp_path),
    )
    _, token = ctx.tokens.create("t", "viewer", created_by="test")
    runner = await start(ctx, host="127.0.0.1", port=0, tls=True)
    try:
        port = bound_port(runner)
        cert, _ = cert_paths(tmp_path)
        client_ctx = ssl.create_default_context(cafile=str(cert))
        client_ctx.check_hostname = False  # trust is by fingerprint, not by name
        seen = hashlib.sha256(await _peer_cert(port, client_ctx)).hexdigest().upper()
        assert ctx.tls_fingerprint is not None
        assert ctx.tls_fingerprint == stored_fingerprint(tmp_path)
        assert ctx.tls_fingerprint.replace(":", "") == seen
        url = f"https://127.0.0.1:{port}/v1/status"
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, ssl=client_ctx, headers=headers) as resp,
        ):
            assert (await resp.json())["tls_fingerprint"] == ctx.tls_fingerprint
    finally:
        await runner.cleanup()
        ctx.tokens.close()
        store.close()
