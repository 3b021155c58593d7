"""Device NATS users and the sync knobs of the hub config, as the nats-server config sees them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.config import DataDir, HubConfig, Secrets, parse_toml
from hub.errors import ConfigError, HubError
from hub.natsconf import device_user, render
from hub.store import Store
from hub.sync.enroll import enroll_in_store, normalise_tags
from protocol.messages import DeviceFacts, EnrollRequest


def test_device_user_is_limited_to_its_own_subjects() -> None:
    conf = device_user("dev-1", "pw").to_conf()
    assert conf["user"] == "dev-1"
    pub = conf["permissions"]["publish"]["allow"]
    sub = conf["permissions"]["subscribe"]["allow"]
    assert "sb.dev.dev-1.>" in pub and not any("dev-2" in p or "*" in p for p in pub)
    assert "$JS.hub.API.DIRECT.GET.KV_desired.$KV.desired.dev-1" in pub
    assert sub == [
        "_INBOX.dev-1.>",
        "sb.desired.dev-1",
        "$KV.desired.dev-1",
        "sb.dev.dev-1.rpc.>",
    ]


def test_rendered_config_holds_device_users(tmp_path: Path) -> None:
    doc = json.loads(
        render(HubConfig(), DataDir(tmp_path), Secrets("h", "o", "e"), [device_user("d1", "p")])
    )
    users = [u["user"] for u in doc["accounts"]["SIGNALBEAM"]["users"]]
    assert users == ["hub", "operator", "enroll", "d1"]


def test_offline_grace_is_a_positive_integer() -> None:
    assert parse_toml("offline_grace = 5").offline_grace == 5
    assert HubConfig().offline_grace == 90
    with pytest.raises(ConfigError):
        parse_toml("offline_grace = 0")
    with pytest.raises(ConfigError):
        parse_toml("offline_grace = 1.5")


def test_tags_are_lower_cased_or_refused() -> None:
    assert normalise_tags(("Lab", "rpi", "lab")) == ["lab", "rpi"]
    with pytest.raises(HubError):
        normalise_tags(("a:b",))


def test_reserved_ids_and_refusals_store_nothing(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "hub.db")
    _, token = store.create_enrollment_token("acme", 3600, 5)
    facts = DeviceFacts("h", "x86_64", "linux", "podman", "0.1")
    for bad in ("hub", "enroll", "operator"):
        with pytest.raises(HubError):
            enroll_in_store(store, EnrollRequest(token, bad, facts), "pw")
    assert store.scalar("SELECT count(*) FROM devices") == 0
    assert store.scalar("SELECT uses FROM enrollment_tokens") == 0
    info = enroll_in_store(store, EnrollRequest(token, "d1", facts, ("Lab",)), "pw")
    assert info == {"tenant": "acme", "again": False, "tags": ["lab"]}
    assert store.active_device_credentials() == [("d1", "d1", "pw")]
    store.close()
