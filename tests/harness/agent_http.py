"""A real agent behind the local HTTP API, for the test_http_* modules (no tests here).

``ApiServer`` runs, on its own thread and event loop, what the daemon would: a real store
file, a real engine client on a harness engine, a real ``ReconcileLoop``, and the API on a
free loopback port. Tests talk to it over HTTP with ``requests`` (schemathesis needs a
synchronous server it can reach) and may read the store directly (it is thread-safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from agent.config import AgentConfig
from agent.http.app import build_app  # noqa: F401 - import check: the API builds
from agent.http.context import AppContext, HttpLimits, HubLink
from agent.http.server import bound_port, start
from agent.http.tokens import TokenStore
from agent.reconcile.loop import LoopOptions, ReconcileLoop
from agent.runtime import connect
from agent.store import Store
from tests.harness.engines import EngineHandle
from tests.harness.ports import free_port, wait_for_port
from tests.harness.registry import Registry

T = TypeVar("T")
DEVICE = "http-test"


# What a poll of the agent's HTTP API may meet before it holds: an API not up yet, an answer
# that is not the awaited one yet (tests.harness.wait.eventually_blocking's tolerate=).
NOT_YET = (requests.RequestException, AssertionError)


@dataclass
class Tokens:
    admin: str
    operator: str
    viewer: str

    @staticmethod
    def header(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


class ApiServer:
    def __init__(
        self,
        data_dir: Path,
        engine: EngineHandle,
        registry: Registry,
        *,
        limits: HttpLimits | None = None,
        hub_online: bool | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.engine_handle = engine
        self.registry = registry
        self.limits = limits or HttpLimits()
        self.hub = HubLink(hub_online, time.time() if hub_online else None)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ctx: AppContext | None = None
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="http-api", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> ApiServer:
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError("API server did not start within 60 s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        config = AgentConfig(data_dir=self.data_dir, device_id=DEVICE)
        store = Store.open(config.db_path, device_id=DEVICE)
        engine = connect(
            DEVICE,
            self.engine_handle.url,
            kind=self.engine_handle.kind,  # type: ignore[arg-type]
            insecure_registries=[self.registry.host],
        )
        options = LoopOptions(
            interval=3600, poll=0.2, min_uptime=0.5, error_backoff=1.0, health_window=20.0
        )
        loop = ReconcileLoop(engine, store, store.current_desired, DEVICE, options)
        loop_task = asyncio.create_task(loop.run())
        tokens = TokenStore.in_data_dir(self.data_dir)
        self.ctx = AppContext(
            config=config,
            store=store,
            tokens=tokens,
            engine=engine,
            reconcile=loop,
            hub_link=lambda: self.hub,
            limits=self.limits,
        )
        runner = await start(self.ctx, host="127.0.0.1", port=0)
        self.port = bound_port(runner)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            loop.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(loop_task, 20)
            await engine.close()
            tokens.close()
            store.close()

    # -- helpers --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60) -> T:
        """Run a coroutine on the server's loop (engine calls must stay on that loop)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)

    def make_tokens(self) -> Tokens:
        assert self.ctx is not None
        out = {}
        for role in ("admin", "operator", "viewer"):
            _, text = self.ctx.tokens.create(f"test-{role}", role, created_by="test")
            out[role] = text
        return Tokens(**out)

    def get(self, path: str, token: str | None, **kw: Any) -> requests.Response:
        headers = Tokens.header(token) if token else {}
        return requests.get(self.url + path, headers=headers, **{"timeout": 30, **kw})

    def post(self, path: str, token: str | None, **kw: Any) -> requests.Response:
        headers = {**(Tokens.header(token) if token else {}), **kw.pop("headers", {})}
        return requests.post(self.url + path, headers=headers, **{"timeout": 60, **kw})

    def delete(self, path: str, token: str | None, **kw: Any) -> requests.Response:
        headers = Tokens.header(token) if token else {}
        return requests.delete(self.url + path, headers=headers, **{"timeout": 30, **kw})


def hello_bundle(
    registry: Registry, port: int, version: str = "1.0", image: str = "sbtest/hello"
) -> str:
    return (
        "bundle: httptest\n"
        f"version: {version}.0\n"
        "containers:\n"
        "  - name: web\n"
        f"    image: {registry.ref(f'{image}:{version}')}\n"
        "    network_mode: host\n"
        f'    env: {{PORT: "{port}"}}\n'
    )


def apply_hello(api: ApiServer, token: str, version: str = "1.0") -> int:
    """Apply sbtest/hello locally through the API; wait until it answers. Returns its port."""
    port = free_port()
    resp = api.post(
        "/v1/local/desired",
        token,
        data=hello_bundle(api.registry, port, version),
        headers={"Content-Type": "application/yaml"},
    )
    assert resp.status_code == 201, resp.text
    wait_for_port(port, timeout=90)
    return port


def assert_error(
    resp: requests.Response, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert err["code"] == code and isinstance(err["message"], str) and err["message"]
    if field is not None:
        assert err.get("field") == field, err
    return err


def events_of(api: ApiServer, kind: str) -> list[Any]:
    assert api.ctx is not None
    return [e for e in api.ctx.store.events(limit=1000) if e.kind == kind]


def module_api(name: str) -> Any:
    """Module-scoped ``api`` and ``tokens`` fixtures: a started ``ApiServer`` on the
    session's Podman and registry in a temp dir named ``name``, and its tokens. In a test
    module: ``api, tokens = module_api("http-auth")``."""

    @pytest.fixture(scope="module")
    def api(
        tmp_path_factory: pytest.TempPathFactory, _podman_service: EngineHandle, registry: Registry
    ) -> Iterator[ApiServer]:
        server = ApiServer(tmp_path_factory.mktemp(name), _podman_service, registry)
        server.start()
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture(scope="module")
    def tokens(api: ApiServer) -> Tokens:
        return api.make_tokens()

    return api, tokens
