"""Authentication and authorisation of the local API against a real agent: no token, wrong
token, revoked token, roles, token management over HTTP (audited), failed-auth rate limit."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import requests

from tests.harness.agent_http import ApiServer, Tokens, assert_error, events_of, module_api

pytestmark = pytest.mark.engine


api, tokens = module_api("http-auth")


@pytest.fixture(autouse=True)
def _fresh_failure_budget(api: ApiServer) -> Iterator[None]:
    assert api.ctx is not None
    api.ctx.limiter.reset()
    yield
    api.ctx.limiter.reset()


def test_no_token(api: ApiServer) -> None:
    resp = api.get("/v1/status", None)
    assert_error(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(api.post("/v1/reconcile", None), 401, "unauthorized")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer sbt_000000000000_" + "A" * 43,  # well-formed, unknown id
        "Bearer not-a-token",
        "Token abc",
        "Basic !!!notbase64",
    ],
)
def test_wrong_token(api: ApiServer, tokens: Tokens, header: str) -> None:
    resp = requests.get(api.url + "/v1/status", headers={"Authorization": header}, timeout=10)
    assert_error(resp, 401, "unauthorized")


def test_right_id_wrong_secret(api: ApiServer, tokens: Tokens) -> None:
    forged = tokens.viewer[:17] + ("B" if tokens.viewer[17] != "B" else "C") + tokens.viewer[18:]
    assert_error(api.get("/v1/status", forged), 401, "unauthorized")


def test_roles(api: ApiServer, tokens: Tokens) -> None:
    assert api.get("/v1/status", tokens.viewer).status_code == 200
    err = assert_error(api.post("/v1/reconcile", tokens.viewer), 403, "forbidden")
    assert "operator" in err["message"]
    assert_error(api.delete("/v1/local/desired", tokens.viewer), 403, "forbidden")
    assert_error(api.post("/v1/containers/web/restart", tokens.viewer), 403, "forbidden")
    assert_error(api.get("/v1/tokens", tokens.operator), 403, "forbidden")
    assert_error(
        api.post("/v1/tokens", tokens.operator, json={"name": "x", "role": "admin"}),
        403,
        "forbidden",
    )
    assert api.post("/v1/reconcile", tokens.admin).status_code == 202  # admin ⊇ operator


def test_basic_auth_carries_the_token_for_browsers(api: ApiServer, tokens: Tokens) -> None:
    ok = requests.get(api.url + "/v1/status", auth=("anyone", tokens.viewer), timeout=10)
    assert ok.status_code == 200
    # Never for changes: a browser would replay cached Basic credentials for another site.
    before = len(events_of(api, "local.reconcile"))
    csrf = requests.post(api.url + "/v1/reconcile", auth=("x", tokens.operator), timeout=10)
    err = assert_error(csrf, 401, "unauthorized")
    assert "Bearer" in err["message"]
    assert len(events_of(api, "local.reconcile")) == before
    basic = base64.b64encode(b"anyone:wrong").decode()
    resp = requests.get(
        api.url + "/v1/status", headers={"Authorization": f"Basic {basic}"}, timeout=10
    )
    assert_error(resp, 401, "unauthorized")


def test_token_lifecycle_over_http_is_audited(api: ApiServer, tokens: Tokens) -> None:
    created = api.post("/v1/tokens", tokens.admin, json={"name": "alice", "role": "operator"})
    assert created.status_code == 201, created.text
    doc = created.json()
    assert doc["name"] == "alice" and doc["role"] == "operator" and doc["token"].startswith("sbt_")
    alice = doc["token"]
    assert api.post("/v1/reconcile", alice).status_code == 202
    listed = api.get("/v1/tokens", tokens.admin).json()["tokens"]
    assert "alice" in {t["name"] for t in listed}
    assert all("token" not in t and "hash" not in t for t in listed)
    assert_error(
        api.post("/v1/tokens", tokens.admin, json={"name": "alice"}), 409, "conflict", "name"
    )

    revoked = api.delete(f"/v1/tokens/{doc['id']}", tokens.admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert_error(api.get("/v1/status", alice), 401, "unauthorized")
    assert_error(api.delete("/v1/tokens/ffffffffffff", tokens.admin), 404, "not_found")
    assert_error(api.delete("/v1/tokens/nope", tokens.admin), 422, "invalid", "id")

    made = events_of(api, "local.token_created")[-1]
    assert made.data["token"] == {"id": doc["id"], "name": "alice", "role": "operator"}
    assert made.data["actor"] == "token:test-admin"
    gone = events_of(api, "local.token_revoked")[-1]
    assert gone.data["token"]["id"] == doc["id"]
    # The token's text never reaches the event log (which goes to the hub).
    assert api.ctx is not None
    assert all(alice not in repr(e) for e in api.ctx.store.events(limit=1000))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "viewer"}, "name"),
        ({"name": "", "role": "viewer"}, "name"),
        ({"name": "bob", "role": "root"}, "role"),
        ({"name": "bob", "colour": "red"}, "colour"),
    ],
)
def test_token_create_validation(
    api: ApiServer, tokens: Tokens, body: dict[str, str], field: str
) -> None:
    assert_error(api.post("/v1/tokens", tokens.admin, json=body), 422, "invalid", field)


def test_token_create_needs_json(api: ApiServer, tokens: Tokens) -> None:
    bad = api.post(
        "/v1/tokens", tokens.admin, data="{nope", headers={"Content-Type": "application/json"}
    )
    assert_error(bad, 400, "bad_request", "body")
    assert_error(api.post("/v1/tokens", tokens.admin, json=[1]), 422, "invalid", "body")


def test_failed_auth_is_rate_limited_per_token(api: ApiServer, tokens: Tokens) -> None:
    assert api.ctx is not None
    budget = api.ctx.limiter.max_failures
    bad = "sbt_000000000000_" + "A" * 43
    for _ in range(budget):
        assert_error(api.get("/v1/status", bad), 401, "unauthorized")
    blocked = api.get("/v1/status", bad)
    assert_error(blocked, 429, "rate_limited")
    assert int(blocked.headers["Retry-After"]) >= 1
    # Issue 19: every local client comes from 127.0.0.1, so another process's bad tokens
    # must not lock a valid token out. Each token has its own budget.
    assert api.get("/v1/status", tokens.viewer).status_code == 200
    for i in range(budget * 2):  # many different bad tokens: each is refused, none blocks
        other = f"sbt_{i:012x}_" + "B" * 43
        assert_error(api.get("/v1/status", other), 401, "unauthorized")
    assert api.get("/v1/status", tokens.viewer).status_code == 200
    assert_error(api.get("/v1/status", bad), 429, "rate_limited")
    # Unauthenticated probes stay open for monitoring.
    assert api.get("/health/live", None).status_code == 200
