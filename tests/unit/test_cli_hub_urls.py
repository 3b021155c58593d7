"""Several hub URLs in the CLI settings (docs/cli.md "Several hub URLs"): flag,
environment and config file; the failover wait; the error naming every URL tried."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol import errors as codes
from tui.client import HubClient, connect_errors, split_urls
from tui.config import DEFAULT_FAILOVER, ConfigError, resolve

A = "nats://operator:p%2Cw@10.0.0.1:4222"
B = "nats://operator:pw@10.0.0.2:4222"


def env(tmp_path: Path, text: str = "", **extra: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return {"SIGNALBEAM_CONFIG": str(path), **extra}


def test_urls_from_flag_environment_and_file(tmp_path: Path) -> None:
    assert split_urls(resolve(hub=f"{A}, {B}", env=env(tmp_path)).hub) == [A, B]
    assert split_urls(resolve(env=env(tmp_path, SIGNALBEAM_HUB=f"{A},{B}")).hub) == [A, B]
    got = resolve(env=env(tmp_path, f'hub = ["{A}", "{B}"]\nfailover = 5\n'))
    assert split_urls(got.hub) == [A, B] and got.failover == 5.0
    one = resolve(env=env(tmp_path, f'hub = "{A}"\n'))
    assert split_urls(one.hub) == [A] and one.failover == DEFAULT_FAILOVER
    client = HubClient.from_settings(got)
    assert client.urls == [A, B] and client.url == A and client.failover == 5.0


@pytest.mark.parametrize(
    "text", ["hub = []\n", 'hub = ["a,b"]\n', "hub = [1]\n", "failover = -1\n", "hub = 3\n"]
)
def test_bad_hub_lists_and_failover_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        resolve(env=env(tmp_path, text))


def test_empty_hub_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        resolve(hub=" , ", env=env(tmp_path))


def test_every_url_tried_is_named_with_its_reason_and_no_password() -> None:
    err = connect_errors(
        {A: OSError("connection refused"), B: Exception("nats: 'Authorization Violation'")},
        None,
    )
    assert err.code == codes.UNAVAILABLE and err.field == "hub"
    assert "no hub URL answered (2 tried)" in err.message
    assert "nats://operator:***@10.0.0.1:4222: cannot connect" in err.message
    assert "nats://operator:***@10.0.0.2:4222: the hub at" in err.message
    assert "pw" not in err.message and "p%2Cw" not in err.message
    both = connect_errors({A: Exception("authorization violation"), B: Exception("ditto")}, None)
    assert both.code == codes.UNAVAILABLE
    refused = connect_errors(
        {A: Exception("authorization violation"), B: Exception("Authorization Violation")}, None
    )
    assert refused.code == codes.UNAUTHORIZED
    single = connect_errors({A: OSError("refused")}, None)
    assert single.message.startswith("cannot connect to the hub at nats://operator:***@10.0.0.1")
