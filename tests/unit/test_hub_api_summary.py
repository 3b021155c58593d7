"""The operator-API additions the TUI reads: ``session.whoami``, the ``devices.list``
summary view, dry runs, and the coalesced device notices. On a real SQLite file through
``dispatch`` (no NATS); the pure parts directly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hub import __version__
from hub.api.dispatch import dispatch
from hub.store import Store
from protocol.errors import is_error


class Env:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.admin_rec, self.admin = store.create_api_key("admin", "admin")
        self.ro_rec, self.ro = store.create_api_key("viewer", "readonly")

    def call(self, verb: str, body: Any = None, key: str = "admin") -> dict[str, Any]:
        k = {"admin": self.admin, "ro": self.ro}[key]
        return dispatch(self.store, verb, json.dumps(body or {}).encode(), k).body


@pytest.fixture
def env(tmp_path: Path) -> Env:
    store = Store.open(tmp_path / "hub.db")
    yield Env(store)
    store.close()


@pytest.mark.parametrize("key", ["admin", "ro"])
def test_whoami_names_the_key_and_its_role(env: Env, key: str) -> None:
    rec = env.admin_rec if key == "admin" else env.ro_rec
    body = env.call("session.whoami", key=key)
    assert body == {
        "key_id": rec["id"],
        "name": rec["name"],
        "role": "admin" if key == "admin" else "readonly",
        "hub_version": __version__,
    }


def test_whoami_refuses_body_fields(env: Env) -> None:
    body = env.call("session.whoami", {"x": 1})
    assert is_error(body) and body["error"]["field"] == "x"
