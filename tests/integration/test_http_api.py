"""Every endpoint of the local API against a real agent: real store file, real engine
(every harness engine: Podman, and Docker where present), real reconcile loop running a real bundle pulled from the harness registry.

Tests run in file order against one module-scoped agent; the last ones clear the override.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from agent.metrics.folding import roll_up
from agent.runtime.base import Engine
from tests.conftest import ENGINE_KINDS, _wanted
from tests.harness.agent_http import (
    NOT_YET,
    ApiServer,
    Tokens,
    apply_hello,
    assert_error,
    events_of,
)
from tests.harness.engines import EngineHandle
from tests.harness.registry import Registry
from tests.harness.wait import eventually_blocking

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module", params=ENGINE_KINDS)
def api(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    registry: Registry,
) -> Iterator[ApiServer]:
    kind: str = request.param
    if not _wanted(kind):
        pytest.skip(f"{kind} excluded by SB_TEST_ENGINES")
    handle: EngineHandle = request.getfixturevalue(f"_{kind}_service")
    server = ApiServer(
        tmp_path_factory.mktemp(f"http-api-{kind}"), handle, registry, hub_online=True
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        handle.remove_test_containers()


@pytest.fixture(scope="module")
def tokens(api: ApiServer) -> Tokens:
    return api.make_tokens()


@pytest.fixture(scope="module")
def app_port(api: ApiServer, tokens: Tokens) -> int:
    """sbtest/hello applied through POST /v1/local/desired, running and answering."""
    port = apply_hello(api, tokens.operator)

    def healthy() -> bool:
        doc = api.get("/v1/status", tokens.viewer).json()
        return (doc.get("deployment") or {}).get("status") == "healthy"

    eventually_blocking(healthy, "deployment healthy", timeout=90, tolerate=NOT_YET)
    return port


# ---------------------------------------------------------------- public endpoints


def test_health_endpoints_need_no_token(api: ApiServer) -> None:
    live = api.get("/health/live", None)
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = api.get("/health/ready", None)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"store": "ok", "engine": "ok"}
    doc = api.get("/openapi.json", None).json()
    assert doc["openapi"].startswith("3.") and "/v1/status" in doc["paths"]


def test_aiohttp_own_errors_use_the_error_shape(api: ApiServer, tokens: Tokens) -> None:
    assert_error(api.get("/nope", None), 404, "not_found")
    err = assert_error(api.delete("/v1/status", tokens.admin), 405, "method_not_allowed")
    assert "DELETE" in err["message"]
    too_big = api.post(
        "/v1/local/desired",
        tokens.operator,
        data=b"x" * (300 * 1024),
        headers={"Content-Type": "application/yaml"},
    )
    assert_error(too_big, 413, "too_large")
    assert_error(api.get("/v1/status?verbose=1", tokens.viewer), 422, "invalid", "verbose")


# ---------------------------------------------------------------- reads


def test_status_reports_the_running_bundle(api: ApiServer, tokens: Tokens, app_port: int) -> None:
    doc = api.get("/v1/status", tokens.viewer).json()
    assert doc["device_id"] == "http-test"
    assert doc["agent_version"]
    assert doc["uptime_seconds"] > 0
    assert doc["hub"] == {
        "configured": True,
        "online": True,
        "last_contact": api.hub.last_contact,
        "unreachable_since": None,
    }
    assert doc["running_bundle"] == "httptest@1.0.0"
    assert doc["desired"]["source"] == "local"
    assert doc["desired"]["generation"] == doc["deployment"]["generation"]
    assert doc["last_reconcile"]["result"] in ("succeeded", "noop")
    assert doc["stuck"] is None
    assert doc["engine"]["kind"] == api.engine_handle.kind
    assert [c["service"] for c in doc["containers"]] == ["web"]


def test_containers_list_and_one(api: ApiServer, tokens: Tokens, app_port: int) -> None:
    items = api.get("/v1/containers", tokens.viewer).json()["containers"]
    assert len(items) == 1
    c = items[0]
    assert c["service"] == "web" and c["state"] == "running"
    assert c["image"].endswith("sbtest/hello:1.0")
    assert c["bundle"] == "httptest" and c["version"] == "1.0.0"
    assert c["restart_count"] >= 0
    assert c["stats"] is not None and c["stats"]["memory_bytes"] > 0
    by_service = api.get("/v1/containers/web", tokens.viewer).json()
    by_name = api.get(f"/v1/containers/{c['name']}", tokens.viewer).json()
    assert by_service["id"] == by_name["id"] == c["id"]
    assert_error(api.get("/v1/containers/ghost", tokens.viewer), 404, "not_found")
    assert_error(api.get("/v1/containers/bad%20name", tokens.viewer), 422, "invalid", "name")


def test_logs_tail(api: ApiServer, tokens: Tokens, app_port: int) -> None:
    resp = api.get("/v1/containers/web/logs?tail=20", tokens.viewer)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert f"sbtest 1.0 listening on {app_port}" in resp.text
    later = api.get(f"/v1/containers/web/logs?since={int(time.time()) + 5}", tokens.viewer)
    assert later.status_code == 200 and "listening on" not in later.text
    assert_error(api.get("/v1/containers/web/logs?tail=-1", tokens.viewer), 422, "invalid", "tail")
    assert_error(
        api.get("/v1/containers/web/logs?follow=maybe", tokens.viewer), 422, "invalid", "follow"
    )


def _write_to_container_log(api: ApiServer, text: str) -> None:
    assert api.ctx is not None
    engine: Engine = api.ctx.get_engine()

    async def run() -> None:
        c = next(c for c in await engine.list_containers() if c.service == "web")
        res = await engine.exec(c.id, ["/bin/sh", "-c", f"echo {text} > /proc/1/fd/1"], 10)
        assert res.exit_code == 0, res.output

    api.call(run)


def _read_until(lines: Iterator[str | bytes], needle: str, max_lines: int = 200) -> list[str]:
    seen = []
    for _ in range(max_lines):
        raw = next(lines)
        line = raw.decode() if isinstance(raw, bytes) else raw
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not in the first {max_lines} lines: {seen}")


@pytest.mark.parametrize("fmt", ["text", "sse"])
def test_log_follow_streams_new_lines_and_frees_the_stream(
    api: ApiServer, tokens: Tokens, app_port: int, fmt: str
) -> None:
    assert api.ctx is not None
    streams = api.call(_streams(api))
    assert streams.active == 0
    resp = requests.get(
        f"{api.url}/v1/containers/web/logs?follow=true&tail=5&format={fmt}",
        headers=Tokens.header(tokens.viewer),
        stream=True,
        timeout=30,  # per read: an idle stream still gets keepalives (SSE) or the line
    )
    try:
        assert resp.status_code == 200
        lines = resp.iter_lines(decode_unicode=True)
        _read_until(lines, "listening on")
        assert streams.active == 1
        marker = f"follow-marker-{fmt}-{time.monotonic_ns()}"
        _write_to_container_log(api, marker)
        got = _read_until(lines, marker)
        if fmt == "sse":
            assert got[-1] == f"data: {marker}"
    finally:
        resp.close()
    eventually_blocking(
        lambda: streams.active == 0, "the server to free the stream", timeout=15, tolerate=NOT_YET
    )


def test_follow_streams_are_limited(api: ApiServer, tokens: Tokens, app_port: int) -> None:
    streams = api.call(_streams(api))
    saved = streams.limit
    streams.limit = 1
    url = f"{api.url}/v1/containers/web/logs?follow=1&tail=1"
    first = requests.get(url, headers=Tokens.header(tokens.viewer), stream=True, timeout=30)
    try:
        assert first.status_code == 200
        second = api.get("/v1/containers/web/logs?follow=1&tail=1", tokens.viewer)
        assert_error(second, 503, "unavailable")
        assert int(second.headers["Retry-After"]) > 0
    finally:
        first.close()
        streams.limit = saved
    eventually_blocking(
        lambda: streams.active == 0, "the stream to be freed", timeout=15, tolerate=NOT_YET
    )


def _streams(api: ApiServer) -> Any:
    async def get() -> Any:
        from agent.http.logs import STREAMS_KEY

        for runner_app in _apps(api):
            return runner_app[STREAMS_KEY]
        raise AssertionError("no app")

    return get


def _apps(api: ApiServer) -> list[Any]:
    # The app is reachable from the context's extra slot the server start-up fills.
    assert api.ctx is not None
    return [api.ctx.extra["app"]]


def test_events_paging_and_audit(api: ApiServer, tokens: Tokens, app_port: int) -> None:
    first = api.get("/v1/events?after_seq=0&limit=2", tokens.viewer).json()
    assert [e["seq"] for e in first["events"]] == sorted(e["seq"] for e in first["events"])
    assert len(first["events"]) == 2
    nxt = api.get(f"/v1/events?after_seq={first['next_after_seq']}&limit=2", tokens.viewer).json()
    assert nxt["events"][0]["seq"] > first["events"][-1]["seq"]
    newest = api.get("/v1/events?limit=1000", tokens.viewer).json()["events"]
    changed = [e for e in newest if e["kind"] == "desired.changed"]
    assert changed and "by token:test-operator" in changed[0]["message"]
    assert_error(api.get("/v1/events?limit=0", tokens.viewer), 422, "invalid", "limit")
    assert_error(api.get("/v1/events?after_seq=x", tokens.viewer), 422, "invalid", "after_seq")


def test_desired_and_journal(api: ApiServer, tokens: Tokens, app_port: int) -> None:
    d = api.get("/v1/desired", tokens.viewer).json()
    assert d["desired"]["source"] == "local"
    assert d["desired"]["spec"]["bundle"] == "httptest"
    assert d["revisions"][0]["source"] == "local"
    runs = api.get("/v1/journal?limit=5", tokens.viewer).json()["runs"]
    assert runs and runs[0]["id"] >= runs[-1]["id"]
    actions = {s["step"].get("action") for r in runs for s in r["steps"]}
    assert {"create", "start"} <= actions
    assert_error(api.get("/v1/journal?limit=100000", tokens.viewer), 422, "invalid", "limit")


def test_metrics_from_local_rollups(api: ApiServer, tokens: Tokens) -> None:
    assert api.ctx is not None
    store = api.ctx.store
    now = time.time()
    start = now - 3 * 3600
    for i in range(0, 3 * 3600, 60):
        store.record_samples(start + i, {"cpu.percent": float(i % 100), "mem.used": 1e6})
    roll_up(store, now)
    one_m = api.get("/v1/metrics?resolution=1m&since=-24h&metric=cpu.percent", tokens.viewer).json()
    assert one_m["resolution"] == "1m" and not one_m["truncated"]
    assert list(one_m["series"]) == ["cpu.percent"]
    cpu = one_m["series"]["cpu.percent"]
    assert 170 <= len(cpu["ts"]) == one_m["points"] <= 181
    assert len(cpu["min"]) == len(cpu["avg"]) == len(cpu["max"]) == len(cpu["count"])
    assert cpu["ts"] == sorted(cpu["ts"]) and all(t % 60 == 0 for t in cpu["ts"])
    assert one_m["since"] % 60 == 0  # a relative since is normalised to its bucket
    hourly = api.get("/v1/metrics?resolution=1h&since=-1d", tokens.viewer).json()
    assert set(hourly["series"]) == {"cpu.percent", "mem.used"}
    assert all(c == 60 for c in hourly["series"]["mem.used"]["count"][1:-1])
    limited = api.get("/v1/metrics?resolution=1m&since=-24h&limit=5", tokens.viewer).json()
    assert limited["points"] == 5 and limited["truncated"]
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 600))
    raw = api.get(f"/v1/metrics?resolution=raw&since={iso}", tokens.viewer).json()
    assert raw["since"] == pytest.approx(int(now - 600), abs=1)
    assert all(t >= raw["since"] for s in raw["series"].values() for t in s["ts"])
    empty = api.get("/v1/metrics?since=-1h&until=-2h", tokens.viewer).json()
    assert empty["series"] == {} and not empty["truncated"]
    assert_error(api.get("/v1/metrics?resolution=5m", tokens.viewer), 422, "invalid", "resolution")
    assert_error(api.get("/v1/metrics?since=yesterday", tokens.viewer), 422, "invalid", "since")


def test_prometheus_metrics(api: ApiServer, tokens: Tokens, app_port: int) -> None:
    resp = api.get("/metrics", tokens.viewer)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(resp.text)
        for s in fam.samples
    }
    runs = sum(v for (n, _), v in samples.items() if n == "signalbeam_reconcile_runs_total")
    assert runs >= 1
    assert samples[("signalbeam_reconcile_duration_seconds_count", ())] >= 1
    running = [
        v
        for (n, labels), v in samples.items()
        if n == "signalbeam_containers" and dict(labels)["state"] == "running"
    ]
    assert sum(running) == 1
    # Exported always; its value depends on whether an earlier test left the image cached.
    assert samples[("signalbeam_image_pull_bytes_total", ())] >= 0
    assert ("signalbeam_outbox_pending_rows", ()) in samples
    assert ("signalbeam_sync_lag_seconds", ()) in samples
    assert samples[("signalbeam_hub_online", ())] == 1
    assert_error(api.get("/metrics", None), 401, "unauthorized")


def test_html_status_page(api: ApiServer, tokens: Tokens, app_port: int) -> None:
    anon = api.get("/", None)
    assert anon.status_code == 401
    assert anon.headers["WWW-Authenticate"].startswith("Basic")
    page = requests.get(api.url + "/", auth=("tech", tokens.viewer), timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "http-test" in page.text and "httptest@1.0.0" in page.text
    assert "<script" not in page.text.lower()


# ---------------------------------------------------------------- actions


def test_reconcile_now_is_audited(api: ApiServer, tokens: Tokens, app_port: int) -> None:
    before = len(events_of(api, "local.reconcile"))
    resp = api.post("/v1/reconcile", tokens.operator)
    assert resp.status_code == 202 and resp.json()["triggered"] is True
    ev = events_of(api, "local.reconcile")
    assert len(ev) == before + 1
    assert ev[-1].data["actor"] == "token:test-operator"
    assert "test-operator" in ev[-1].message


def test_restart_container_is_audited(api: ApiServer, tokens: Tokens, app_port: int) -> None:
    before = api.get("/v1/containers/web", tokens.viewer).json()
    resp = api.post("/v1/containers/web/restart?timeout=1", tokens.operator)
    assert resp.status_code == 200, resp.text
    after = resp.json()
    assert after["id"] == before["id"] and after["state"] == "running"
    assert after["started_at"] > before["started_at"]
    ev = events_of(api, "local.restart")[-1]
    assert ev.data["container"] == before["name"] and ev.data["actor"] == "token:test-operator"
    assert_error(
        api.post("/v1/containers/web/restart?timeout=999", tokens.operator),
        422,
        "invalid",
        "timeout",
    )
    assert_error(api.post("/v1/containers/ghost/restart", tokens.operator), 404, "not_found")


def test_a_failed_update_shows_as_stuck_with_the_reason(
    api: ApiServer, tokens: Tokens, app_port: int
) -> None:
    from tests.harness.agent_http import hello_bundle
    from tests.harness.ports import free_port

    bad = hello_bundle(api.registry, free_port(), "1.0", image="sbtest/crash")
    bad = bad.replace("version: 1.0.0", "version: 1.0.1")
    resp = api.post(
        "/v1/local/desired", tokens.operator, data=bad, headers={"Content-Type": "application/yaml"}
    )
    assert resp.status_code == 201, resp.text
    gen = resp.json()["generation"]

    def rolled_back() -> dict[str, Any] | None:
        doc: dict[str, Any] = api.get("/v1/status", tokens.viewer).json()
        dep = doc.get("deployment") or {}
        ok = dep.get("generation") == gen and dep.get("status") in ("failed", "rolled_back")
        return doc if ok else None

    doc = eventually_blocking(
        rolled_back, "the crashing version to be rolled back", timeout=90, tolerate=NOT_YET
    )
    assert doc["stuck"] and str(gen) in doc["stuck"]
    assert doc["running_bundle"] == "httptest@1.0.0"
    page = requests.get(api.url + "/", auth=("tech", tokens.viewer), timeout=10).text
    assert "Stuck" in page
    # Back on the good version for the tests that follow.
    eventually_blocking(
        lambda: api.get("/v1/containers/web", tokens.viewer).json().get("state") == "running",
        "the previous version running again",
        tolerate=NOT_YET,
    )


def test_invalid_local_desired_is_refused_with_the_field(api: ApiServer, tokens: Tokens) -> None:
    bad = "bundle: httptest\nversion: 1.0.0\ncontainers:\n  - name: web\n    image: ''\n"
    err = assert_error(
        api.post(
            "/v1/local/desired",
            tokens.operator,
            data=bad,
            headers={"Content-Type": "application/yaml"},
        ),
        422,
        "invalid",
    )
    assert err["field"].startswith("containers[0]")
    assert any(d["path"] == err["field"] for d in err["details"])
    assert_error(
        api.post(
            "/v1/local/desired",
            tokens.operator,
            data="",
            headers={"Content-Type": "application/yaml"},
        ),
        422,
        "invalid",
        "body",
    )
    assert_error(
        api.post(
            "/v1/local/desired", tokens.operator, data="x", headers={"Content-Type": "image/png"}
        ),
        400,
        "bad_request",
        "body",
    )
    # Nothing was stored: the running override is still the one applied above.
    assert api.get("/v1/desired", tokens.viewer).json()["desired"]["spec"]["bundle"] == "httptest"


def test_clearing_the_override(api: ApiServer, tokens: Tokens, app_port: int) -> None:
    resp = api.delete("/v1/local/desired", tokens.operator)
    assert resp.status_code == 200 and resp.json()["cleared"] is True
    cleared = events_of(api, "desired.local_cleared")[-1]
    assert "token:test-operator" in cleared.message
    assert_error(api.delete("/v1/local/desired", tokens.operator), 404, "not_found")
    assert api.get("/v1/desired", tokens.viewer).json()["desired"] is None


def test_next_hub_generation_clears_a_new_override(
    api: ApiServer, tokens: Tokens, tmp_path: Path
) -> None:
    from protocol.desired import DesiredState

    assert api.ctx is not None
    apply_hello(api, tokens.operator)
    gen = api.get("/v1/desired", tokens.viewer).json()["desired"]["generation"]
    api.ctx.store.put_desired(DesiredState(generation=gen + 1, spec=None, source="hub"))
    d = api.get("/v1/desired", tokens.viewer).json()["desired"]
    assert d["source"] == "hub" and d["generation"] == gen + 1
    assert "hub generation" in events_of(api, "desired.local_cleared")[-1].message
