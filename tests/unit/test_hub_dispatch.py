"""The API request pipeline (auth, roles, body checks, handlers) on a real SQLite file,
without NATS: every refusal is in the error shape and stores nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundles.validate import load_file
from hub.api.dispatch import dispatch
from hub.store import Store
from protocol.api import MAX_BODY_BYTES, VERBS, new_secret
from protocol.errors import is_error

EXAMPLES = Path(__file__).resolve().parents[2] / "bundles" / "examples" / "warehouse-monitor"
TABLES = (
    "devices",
    "device_tags",
    "groups",
    "group_members",
    "bundles",
    "bundle_versions",
    "assignments",
    "events",
    "api_keys",
    "enrollment_tokens",
    "tenants",
)


class Env:
    def __init__(self, store: Store) -> None:
        self.store = store
        _, self.admin = store.create_api_key("admin", "admin")
        _, self.ro = store.create_api_key("viewer", "readonly")
        for i in range(3):
            store.upsert_device(f"dev-{i}", "acme", hostname=f"h{i}")

    def call(self, verb: str, body: Any = None, key: str | None = "admin") -> dict[str, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
        k = {"admin": self.admin, "ro": self.ro}.get(key or "", key)
        return dispatch(self.store, verb, raw, k).body

    def snapshot(self) -> dict[str, list[Any]]:
        return {t: self.store.rows(f"SELECT * FROM {t} ORDER BY rowid") for t in TABLES}


@pytest.fixture
def env(tmp_path: Path) -> Env:
    store = Store.open(tmp_path / "hub.db")
    yield Env(store)
    store.close()


def spec(version: str = "1.3.0") -> dict[str, Any]:
    return load_file(EXAMPLES / f"{version}.yaml").to_dict()


def code(body: dict[str, Any]) -> str | None:
    return body["error"]["code"] if is_error(body) else None


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_needs_a_valid_key(env: Env, verb: str) -> None:
    for key in (None, "sbk_bad_bad", "not-a-key"):
        body = env.call(verb, {}, key=key)
        assert code(body) == "unauthorized", (verb, key, body)


def test_readonly_key_reads_but_cannot_write(env: Env) -> None:
    before = env.snapshot()
    assert not is_error(env.call("devices.list", key="ro"))
    body = env.call("groups.create", {"name": "lab"}, key="ro")
    assert code(body) == "forbidden"
    assert env.snapshot() == before


def test_revoked_key_is_unauthorized(env: Env) -> None:
    key = new_secret("sbk")  # the requester makes the key; the reply carries none
    created = env.call("keys.create", {"name": "tmp", "role": "admin", "key": key})
    assert "key" not in created and created["id"] == key.split("_")[1]
    assert not is_error(env.call("keys.list", key=key))
    env.call("keys.revoke", {"id": created["id"]})
    assert code(env.call("keys.list", key=key)) == "unauthorized"


@pytest.mark.parametrize(
    ("verb", "raw", "want_code", "want_field"),
    [
        ("groups.create", b"not json", "bad_request", "$"),
        ("groups.create", b"[1, 2]", "bad_request", "$"),
        ("groups.create", b'{"name": 5}', "invalid", "name"),
        ("groups.create", b'{"name": "lab", "colour": "red"}', "invalid", "colour"),
        ("groups.create", b"{}", "invalid", "name"),
        ("groups.create", b'{"name": "Bad Name!"}', "invalid", "name"),
        ("devices.tag", b'{"id": "dev-0", "tag": true}', "invalid", "tag"),
        ("devices.list", b'{"limit": 0}', "invalid", "limit"),
        ("devices.list", b'{"limit": true}', "invalid", "limit"),
        ("devices.list", b'{"limit": 5000}', "invalid", "limit"),
        ("assign", b'{"target": "planet:x", "bundle": "a@1.0.0"}', "invalid", "target"),
        ("assign", b'{"target": "group:lab", "bundle": "nope"}', "invalid", "bundle"),
        ("bundles.push", b'{"spec": "x"}', "invalid", "spec"),
        ("bundles.push", b'{"spec": {"bundle": "x"}}', "invalid", None),
        (
            "tokens.create",
            b'{"tenant": "acme", "max_uses": 0, "token": "t"}',
            "invalid",
            "max_uses",
        ),
        ("tokens.create", b'{"tenant": "acme", "expires_in": "1d"}', "invalid", "expires_in"),
        ("tokens.create", b'{"tenant": "acme"}', "invalid", "token"),
        ("tokens.create", b'{"tenant": "acme", "token": "sbt_1_short"}', "invalid", "token"),
        ("keys.create", b'{"name": "x", "role": "root", "key": "k"}', "invalid", "role"),
        (
            "keys.create",
            b'{"name": "x", "key": "sbt_0123abcd_' + b"A" * 32 + b'"}',
            "invalid",
            "key",
        ),
        ("metrics.get", b'{"device": "dev-0", "resolution": "5m"}', "invalid", "resolution"),
        ("no.such.verb", b"{}", "not_found", "verb"),
    ],
)
def test_bad_bodies_get_the_error_shape_and_store_nothing(
    env: Env, verb: str, raw: bytes, want_code: str, want_field: str | None
) -> None:
    before = env.snapshot()
    body = env.call(verb, raw)
    assert code(body) == want_code, body
    assert body["error"]["message"]
    if want_field is not None:
        assert body["error"]["field"] == want_field
    assert env.snapshot() == before


def test_oversized_body_is_too_large(env: Env) -> None:
    before = env.snapshot()
    raw = json.dumps({"name": "x" * (MAX_BODY_BYTES + 10)}).encode()
    assert code(env.call("groups.create", raw)) == "too_large"
    assert env.snapshot() == before


def test_invalid_bundle_reports_every_error_with_its_path(env: Env) -> None:
    bad = spec()
    bad["containers"][0]["ports"] = [{"container": 70000}]
    bad["containers"][0]["image"] = "nginx"
    body = env.call("bundles.push", {"spec": bad})
    assert code(body) == "invalid"
    paths = {d["path"] for d in body["error"]["details"]}
    assert "containers[0].ports[0].container" in paths
    assert any(p.startswith("containers[0].image") for p in paths)
    assert body["error"]["field"].startswith("spec.containers[0]")
    assert env.store.list_bundles() == []


def test_push_is_idempotent_and_a_changed_version_conflicts(env: Env) -> None:
    first = env.call("bundles.push", {"spec": spec()})
    assert first["created"] is True
    assert env.call("bundles.push", {"spec": spec()})["created"] is False
    changed = spec()
    changed["description"] = "something else"
    before = env.snapshot()
    assert code(env.call("bundles.push", {"spec": changed})) == "conflict"
    assert env.snapshot() == before


def test_assign_records_desired_changes_per_device(env: Env) -> None:
    env.call("bundles.push", {"spec": spec("1.2.0")})
    env.call("bundles.push", {"spec": spec("1.3.0")})
    env.call("groups.create", {"name": "lab"})
    env.call("groups.add", {"name": "lab", "device": "dev-1"})
    env.call("devices.tag", {"id": "dev-2", "tag": "rpi"})
    out = env.call("assign", {"target": "group:lab", "bundle": "warehouse-monitor@1.3.0"})
    assert out["desired_changed"] == ["dev-1"]
    out = env.call("assign", {"target": "tag:rpi", "bundle": "warehouse-monitor@1.2.0"})
    assert out["desired_changed"] == ["dev-2"]
    got = env.call("devices.get", {"id": "dev-1"})
    assert got["desired"] == {"bundle": "warehouse-monitor", "version": "1.3.0", "via": "group:lab"}
    # Tagging dev-1 with rpi changes nothing: the group assignment is more specific.
    env.call("devices.tag", {"id": "dev-1", "tag": "rpi"})
    assert env.call("devices.get", {"id": "dev-1"})["desired"]["version"] == "1.3.0"
    # Leaving the group falls back to the tag.
    env.call("groups.remove", {"name": "lab", "device": "dev-1"})
    assert env.call("devices.get", {"id": "dev-1"})["desired"]["via"] == "tag:rpi"
    kinds = [e["kind"] for e in env.call("events.list", {"device": "dev-1"})["items"]]
    assert kinds.count("desired.changed") == 2
    out = env.call("unassign", {"target": "tag:rpi"})
    assert out["desired_changed"] == ["dev-1", "dev-2"]
    assert code(env.call("unassign", {"target": "tag:rpi"})) == "not_found"


def test_paging_devices_with_cursor(env: Env) -> None:
    page = env.call("devices.list", {"limit": 2})
    assert [d["id"] for d in page["items"]] == ["dev-0", "dev-1"]
    rest = env.call("devices.list", {"limit": 2, "cursor": page["next_cursor"]})
    assert [d["id"] for d in rest["items"]] == ["dev-2"] and rest["next_cursor"] is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(verb=st.sampled_from([*VERBS, "bogus"]), doc=json_values, admin=st.booleans())
def test_random_bodies_never_crash(env: Env, verb: str, doc: Any, admin: bool) -> None:
    body = dispatch(env.store, verb, json.dumps(doc).encode(), env.admin if admin else env.ro).body
    if is_error(body):
        assert body["error"]["code"] != "internal", body


def test_group_delete_logs_each_former_member(env: Env) -> None:
    env.call("groups.create", {"name": "tmp"})
    env.call("groups.add", {"name": "tmp", "device": "dev-0"})
    out = env.call("groups.delete", {"name": "tmp"})
    assert out == {"name": "tmp", "deleted": True, "members": ["dev-0"]}
    latest = env.call("events.list", {"device": "dev-0", "limit": 1})["items"][0]
    assert (latest["kind"], latest["data"]) == (
        "member_removed",
        {"group": "tmp", "reason": "deleted"},
    )
    assert code(env.call("groups.delete", {"name": "tmp"})) == "not_found"


def test_extra_handlers_serve_declared_verbs_only(env: Env) -> None:
    from hub.api.handlers import HANDLERS, Outcome
    from hub.api.service import ApiService

    def fake(store: Store, body: dict[str, Any], caller: Any) -> Outcome:
        return Outcome({"served": True, "by": caller.name})

    handlers = {**HANDLERS, "groups.list": fake}
    assert dispatch(env.store, "groups.list", b"{}", env.admin, handlers).body == {
        "served": True,
        "by": "admin",
    }
    undeclared = {**HANDLERS, "rollouts.nope": fake}
    assert (
        code(dispatch(env.store, "rollouts.nope", b"{}", env.admin, undeclared).body) == "not_found"
    )
    service = ApiService(None, env.store, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"protocol\.api\.REQUESTS"):
        service.register("rollouts.nope", fake)
    service.register("groups.list", fake)
    assert service.handlers["groups.list"] is fake
