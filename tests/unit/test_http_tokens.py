"""Token store and failed-auth limiter: hashing at rest, verification, revocation, bounds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.http.ratelimit import AuthFailureLimiter, token_key
from agent.http.tokens import TokenExists, TokenStore, role_allows


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore.in_data_dir(tmp_path)


def test_create_verify_revoke(store: TokenStore) -> None:
    info, text = store.create("alice", "operator", created_by="test")
    assert text.startswith(f"sbt_{info.id}_")
    got = store.verify(text)
    assert got is not None and got.name == "alice" and got.role == "operator"
    assert store.verify(text + "x") is None
    assert store.verify(text[:-1] + ("A" if text[-1] != "A" else "B")) is None
    assert store.verify("") is None
    revoked = store.revoke(info.id)
    assert revoked is not None and revoked.revoked_at is not None
    assert store.verify(text) is None
    assert store.revoke(info.id) == revoked  # idempotent: the first revocation time stays
    assert store.revoke("000000000000") is None


def test_only_the_hash_is_at_rest(store: TokenStore, tmp_path: Path) -> None:
    _, text = store.create("bob", "viewer", created_by="test")
    secret = text.split("_", 2)[2]  # sbt_<id>_<secret>; the secret itself may hold "_"
    store.close()
    for f in tmp_path.iterdir():
        assert secret.encode() not in f.read_bytes(), f
    rows = (
        sqlite3.connect(tmp_path / "http-tokens.db").execute("SELECT hash FROM tokens").fetchall()
    )
    assert len(rows) == 1 and len(rows[0][0]) == 64
    assert (tmp_path / "http-tokens.db").stat().st_mode & 0o077 == 0


def test_names_unique_among_active_tokens(store: TokenStore) -> None:
    info, _ = store.create("carol", "admin", created_by="test")
    with pytest.raises(TokenExists):
        store.create("carol", "viewer", created_by="test")
    store.revoke(info.id)
    store.create("carol", "viewer", created_by="test")
    assert [t.role for t in store.list()] == ["viewer"]
    assert len(store.list(include_revoked=True)) == 2


@pytest.mark.parametrize(("name", "role"), [("", "viewer"), ("x" * 65, "viewer"), ("ok", "root")])
def test_create_refuses_bad_input(store: TokenStore, name: str, role: str) -> None:
    with pytest.raises(ValueError):
        store.create(name, role, created_by="test")  # type: ignore[arg-type]
    assert store.list() == []


def test_roles_are_ordered() -> None:
    assert role_allows("admin", "operator") and role_allows("operator", "viewer")
    assert not role_allows("viewer", "operator") and not role_allows("operator", "admin")
    assert not role_allows("root", "viewer")


def test_limiter_blocks_after_budget_and_forgets_after_window() -> None:
    now = [1000.0]
    lim = AuthFailureLimiter(max_failures=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert lim.retry_after("a") == 0
        lim.failed("a")
    assert lim.retry_after("a") == pytest.approx(60)
    assert lim.retry_after("b") == 0
    now[0] += 30
    assert lim.retry_after("a") == pytest.approx(30)
    now[0] += 31
    assert lim.retry_after("a") == 0


def test_limiter_memory_is_bounded() -> None:
    lim = AuthFailureLimiter(max_failures=2, window=60, max_clients=100, clock=lambda: 0.0)
    for i in range(1000):
        lim.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(lim._fails) == 100
    lim.failed("x")
    lim.succeeded("x")
    assert lim.retry_after("x") == 0


def test_limiter_keys_are_per_token_and_never_hold_the_token() -> None:
    a, b = token_key("127.0.0.1", "sbt_secret_one"), token_key("127.0.0.1", "sbt_secret_two")
    assert a != b and a.startswith("127.0.0.1#") and "secret" not in a
    assert token_key("::1", "sbt_secret_one") != a
    lim = AuthFailureLimiter(max_failures=2, window=60, clock=lambda: 0.0)
    assert [lim.failed(a) for _ in range(4)] == [1, 2, 3, 3]  # past the budget: budget + 1
    assert lim.retry_after(a) > 0 and lim.retry_after(b) == 0
