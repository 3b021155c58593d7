"""Hub config file, generated nats-server and litestream configs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import bcrypt
import pytest
import yaml

from hub import litestream, natsconf
from hub.config import DataDir, HubConfig, Secrets, load, parse_toml, render_toml, save
from hub.errors import ConfigError


def test_toml_round_trip_and_overrides(tmp_path: Path) -> None:
    cfg = HubConfig(client_port=1234, host="127.0.0.1", replica_url="s3://b/p", litestream=False)
    assert parse_toml(render_toml(cfg)) == cfg
    data = DataDir(tmp_path / "d")
    save(data, cfg, Secrets.generate())
    loaded, sec = load(data)
    assert loaded == cfg and sec.hub_password
    assert oct(data.secrets.stat().st_mode & 0o777) == "0o600"
    assert cfg.with_overrides(client_port=None, http_port=9).http_port == 9


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("client_port = 'x'", "client_port"),
        ("client_port = 70000", "client_port"),
        ("colour = 'red'", "colour"),
        ("litestream = 1", "litestream"),
    ],
)
def test_bad_config_names_the_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_toml(text)
    assert exc.value.field == field


def test_missing_config_says_to_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="init"):
        load(DataDir(tmp_path))


def test_nats_config_is_json_with_the_decided_settings(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    sec = Secrets.generate()
    cfg = HubConfig(client_port=1, leafnode_port=2, monitor_port=3)
    extra = natsconf.NatsUser("dev-1", "pw", publish=("sb.dev.dev-1.>",), subscribe=("_INBOX.>",))
    doc = json.loads(natsconf.render(cfg, data, sec, [extra]))
    assert doc["port"] == 1 and doc["http"].endswith(":3")
    assert doc["jetstream"]["domain"] == "hub"
    assert doc["jetstream"]["store_dir"].startswith(str(tmp_path))
    assert doc["leafnodes"] == {"host": cfg.host, "port": 2, "no_advertise": True}
    users = {u["user"]: u for u in doc["accounts"]["SIGNALBEAM"]["users"]}
    assert set(users) == {"hub", "operator", "enroll", "dev-1"}
    assert "permissions" not in users["hub"]
    assert users["enroll"]["permissions"]["publish"]["allow"] == ["sb.hub.enroll"]
    assert "sb.api.>" in users["operator"]["permissions"]["publish"]["allow"]
    # Every password is a bcrypt hash nats-server checks (issue 19): the file hands out none.
    for user in users.values():
        assert natsconf.is_hash(user["password"]), user
    assert bcrypt.checkpw(b"pw", users["dev-1"]["password"].encode())
    assert bcrypt.checkpw(sec.enroll_password.encode(), users["enroll"]["password"].encode())
    with pytest.raises(ValueError, match="duplicate"):
        natsconf.render(cfg, data, sec, [natsconf.NatsUser("hub", "x")])


def test_client_url_escapes_credentials() -> None:
    url = natsconf.client_url(HubConfig(), "op", "p@ss:/x", host="h")
    assert url == "nats://op:p%40ss%3A%2Fx@h:4222"


def test_litestream_config_defaults_to_a_file_replica_under_the_data_dir(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    doc = yaml.safe_load(litestream.render(HubConfig(), data))
    assert doc["dbs"][0]["path"] == str(data.db)
    assert doc["dbs"][0]["replica"]["url"] == (tmp_path / "replica").as_uri()
    doc = yaml.safe_load(litestream.render(HubConfig(replica_url="s3://bucket/hub"), data))
    assert doc["dbs"][0]["replica"]["url"] == "s3://bucket/hub"


def test_init_prints_the_admin_key_once_and_refuses_a_second_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hub.cli import build_parser, cmd_init
    from hub.errors import ConfigError
    from hub.store import Store

    def main(argv: list[str]) -> int:
        # cmd_init, not hub.cli.main: main would install its log handler on the root logger.
        return cmd_init(build_parser().parse_args(argv))

    data = tmp_path / "hub"
    assert (
        main(["init", "--data", str(data), "--client-port", "4999", "--public-host", "hub.lan"])
        == 0
    )
    out = capsys.readouterr().out
    key = next(line.strip() for line in out.splitlines() if line.strip().startswith("sbk_"))
    assert "nats://operator:" in out and "@hub.lan:4999" in out
    store = Store.open(data / "hub.db")
    try:
        assert store.authenticate(key)["role"] == "admin"
        assert key not in str(store.rows("SELECT * FROM api_keys"))
    finally:
        store.close()
    with pytest.raises(ConfigError, match="already initialised"):
        main(["init", "--data", str(data)])
    assert key not in (data / "hub.toml").read_text() + (data / "secrets.json").read_text()


def test_admin_key_recovery_adds_a_working_admin_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hub.cli import build_parser, cmd_admin_key, cmd_init
    from hub.store import Store

    data = tmp_path / "hub"
    cmd_init(build_parser().parse_args(["init", "--data", str(data), "--json"]))
    capsys.readouterr()
    assert cmd_admin_key(build_parser().parse_args(["admin-key", "--data", str(data)])) == 0
    key = capsys.readouterr().out.split()[-1]
    store = Store.open(data / "hub.db")
    try:
        assert store.authenticate(key)["role"] == "admin"
        assert len(store.list_api_keys()) == 2
    finally:
        store.close()
    (data / "hub.pid").write_text(f"{os.getpid()}\n")  # "running": this very process
    with pytest.raises(ConfigError, match="running"):
        cmd_admin_key(build_parser().parse_args(["admin-key", "--data", str(data)]))
