"""Where the CLI finds the hub and key: flags > environment > config file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui.client import redact
from tui.config import DEFAULT_HUB, ConfigError, resolve


def test_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('hub = "nats://file:4222"\napi_key = "from-file"\ntimeout = 2\n')
    env = {"SIGNALBEAM_CONFIG": str(cfg)}
    s = resolve(env=env)
    assert (s.hub, s.api_key, s.timeout) == ("nats://file:4222", "from-file", 2.0)
    env |= {"SIGNALBEAM_HUB": "nats://env:4222", "SIGNALBEAM_API_KEY": "from-env"}
    s = resolve(env=env)
    assert (s.hub, s.api_key) == ("nats://env:4222", "from-env")
    s = resolve("nats://flag:4222", "from-flag", 9, env=env)
    assert (s.hub, s.api_key, s.timeout) == ("nats://flag:4222", "from-flag", 9)


def test_defaults_and_xdg(tmp_path: Path) -> None:
    s = resolve(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert s.hub == DEFAULT_HUB and s.api_key is None
    (tmp_path / "signalbeam").mkdir()
    (tmp_path / "signalbeam" / "config.toml").write_text('api_key = "xdg"\n')
    assert resolve(env={"XDG_CONFIG_HOME": str(tmp_path)}).api_key == "xdg"


@pytest.mark.parametrize("text", ['colour = "red"', "hub = 5", "timeout = true", "not toml ="])
def test_bad_config_file_is_refused(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=str(cfg)):
        resolve(env={"SIGNALBEAM_CONFIG": str(cfg)})


def test_redact_hides_passwords() -> None:
    assert redact("nats://op:s3cret@h:4222") == "nats://op:***@h:4222"
    assert redact("nats://h:4222") == "nats://h:4222"


def test_ca_file_from_flag_env_or_file_is_checked(tmp_path: Path) -> None:
    pem = tmp_path / "hub-ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'ca_file = "{pem}"\n')
    assert resolve(env={"SIGNALBEAM_CONFIG": str(cfg)}).ca_file == str(pem)
    assert resolve(env={"SIGNALBEAM_CA_FILE": str(pem), "HOME": str(tmp_path)}).ca_file == str(pem)
    assert resolve(env={"HOME": str(tmp_path)}).ca_file is None
    with pytest.raises(ConfigError, match="ca_file: cannot read"):
        resolve(env={"HOME": str(tmp_path)}, ca_file=str(tmp_path / "missing.pem"))
    not_pem = tmp_path / "key.txt"
    not_pem.write_text("hello")
    with pytest.raises(ConfigError, match=r"ca_file: .* holds no PEM certificate"):
        resolve(env={"HOME": str(tmp_path)}, ca_file=str(not_pem))
