"""Schemathesis against /openapi.json of a real agent: every operation, bounded examples.

No 5xx, every response conforms to the documented status codes, content types and
schemas, and every error carries the one error shape. Runs with an admin token so the
mutating operations get past auth and exercise their validation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from agent.http.context import HttpLimits
from tests.harness.agent_http import ApiServer, Tokens, apply_hello
from tests.harness.engines import EngineHandle
from tests.harness.registry import Registry

pytestmark = pytest.mark.engine

MAX_EXAMPLES = 25


@pytest.fixture(scope="module")
def fuzz_api(
    tmp_path_factory: pytest.TempPathFactory, _podman_service: EngineHandle, registry: Registry
) -> Iterator[ApiServer]:
    # Short follows so a generated follow=true ends quickly; a large failed-auth budget so
    # schemathesis's own auth probes do not lock the run out.
    limits = HttpLimits(max_follow_seconds=0.5, keepalive_seconds=0.1, auth_max_failures=100_000)
    server = ApiServer(
        tmp_path_factory.mktemp("http-fuzz"), _podman_service, registry, limits=limits
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        _podman_service.remove_test_containers()


@pytest.fixture(scope="module")
def fuzz_tokens(fuzz_api: ApiServer) -> Tokens:
    tokens = fuzz_api.make_tokens()
    # A running service "web" (the documented example name), so the explicit examples
    # restart and follow the logs of a real container, not only 404s.
    apply_hello(fuzz_api, tokens.operator)
    return tokens


@pytest.fixture
def api_schema(fuzz_api: ApiServer) -> Any:
    return schemathesis.openapi.from_url(fuzz_api.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


def _error_shape(response: Any) -> None:
    if response.status_code < 400:
        return
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/json"), (response.status_code, response.headers)
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err.get("code"), str) and isinstance(err.get("message"), str), body
    assert set(err) <= {"code", "message", "field", "details"}, body


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms(case: Any, fuzz_api: ApiServer, fuzz_tokens: Tokens) -> None:
    timeout = str((case.query or {}).get("timeout", "10"))
    if case.operation.label.endswith("/restart") and timeout.isdigit() and int(timeout) > 1:
        case.query = dict(case.query or {})
        # The container in the fuzz run (busybox httpd as PID 1) ignores SIGTERM, so a stop
        # waits out its whole timeout; keep generated ones short so the run stays quick.
        case.query["timeout"] = 1
    excluded = []
    if case.operation.label == "POST /v1/local/desired":
        # A bundle's validity (image references, unique names, ...) is not expressible in
        # JSON Schema, so schema-valid bodies are mostly real 422s; test_http_api covers it.
        excluded.append(positive_data_acceptance)
    response = case.call_and_validate(
        headers=Tokens.header(fuzz_tokens.admin), excluded_checks=excluded
    )
    assert response.status_code < 500, response.text
    _error_shape(response)
