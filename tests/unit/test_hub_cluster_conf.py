"""The hub NATS cluster's config (issue 18): hub.toml settings, every node's nats-server
config, the enrollment reply's URL lists and the device leaf's remote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.sync.leaf import LeafSettings, remote_conf
from hub import natsconf
from hub.config import DataDir, HubConfig, Secrets, parse_toml, render_toml
from hub.errors import ConfigError
from protocol.enroll import EnrollReply, decode_enroll_reply

LOOPBACK = HubConfig(
    host="127.0.0.1",
    cluster_hosts=("127.0.0.1",) * 3,
    cluster_local=(0, 1, 2),
    nats_auth="password",
)
SEC = Secrets("h" * 32, "o" * 32, "e" * 32, "r" * 32)


def test_cluster_settings_round_trip_and_checks() -> None:
    assert parse_toml(render_toml(LOOPBACK)) == LOOPBACK
    assert LOOPBACK.js_replicas == 3 and HubConfig().js_replicas == 1
    for text, field in (
        ('cluster_hosts = ["a", "b"]\ncluster_local = [0, 1]', "cluster_hosts"),
        ('cluster_hosts = ["a", "b", "c"]\ncluster_local = [3]', "cluster_local"),
        ('cluster_hosts = ["a", "b", 3]', "cluster_hosts"),
        ("cluster_local = [0]", "cluster_local"),
        # Password users reach only the configs this hub rewrites: every node local.
        ('cluster_hosts = ["a", "b", "c"]\ncluster_local = [0]', "cluster_local"),
    ):
        with pytest.raises(ConfigError) as e:
            parse_toml(text)
        assert e.value.field == field, text
    remote = parse_toml('nats_auth = "jwt"\ncluster_hosts = ["a", "b", "c"]\ncluster_local = [0]')
    assert [n.host for n in natsconf.local_nodes(remote)] == ["a"]


def test_every_node_has_routes_jetstream_leafnodes_and_the_users(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    paths = natsconf.write(LOOPBACK, data, SEC)
    assert paths == [data.node_conf(i) for i in range(3)]
    confs = [json.loads(p.read_text()) for p in paths]
    for i, conf in enumerate(confs):
        assert conf["server_name"] == f"signalbeam-hub-{i}"
        assert conf["port"] == LOOPBACK.client_port + i
        assert conf["leafnodes"]["port"] == LOOPBACK.leafnode_port + i
        assert conf["http"].endswith(f":{LOOPBACK.monitor_port + i}")
        assert conf["jetstream"]["store_dir"] == str(data.node_dir(i) / "jetstream")
        cluster = conf["cluster"]
        assert cluster["port"] == LOOPBACK.cluster_port + i
        ports = sorted(int(r.rsplit(":", 1)[1]) for r in cluster["routes"])
        assert ports == [LOOPBACK.cluster_port + j for j in range(3) if j != i]
        assert all(r.startswith("nats-route://route:rrrr") for r in cluster["routes"])
        assert natsconf.is_hash(cluster["authorization"]["password"])
        users = [u["user"] for u in conf["accounts"][natsconf.ACCOUNT]["users"]]
        assert users == ["hub", "operator", "enroll"]


def test_operator_mode_gives_every_node_its_own_resolver_dir(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    trust = {"operator": "jwt", "system_account": "A", "resolver": {"type": "full", "dir": "x"}}
    confs = [json.loads(p.read_text()) for p in natsconf.write(LOOPBACK, data, SEC, trust=trust)]
    dirs = {c["resolver"]["dir"] for c in confs}
    assert dirs == {str(data.node_dir(i) / "accounts") for i in range(3)}
    assert all("accounts" not in c and c["resolver"]["type"] == "full" for c in confs)


def test_nodes_on_their_own_hosts_keep_the_ports() -> None:
    cfg = HubConfig(cluster_hosts=("10.0.0.1", "10.0.0.2", "10.0.0.3"), cluster_local=(0,),
                    nats_auth="jwt")  # fmt: skip
    assert natsconf.leaf_urls(cfg) == [f"nats-leaf://10.0.0.{i}:7422" for i in (1, 2, 3)]
    assert natsconf.hub_urls(cfg) == [f"nats://10.0.0.{i}:4222" for i in (1, 2, 3)]
    assert natsconf.leaf_url(cfg) == "nats-leaf://10.0.0.1:7422"


def test_enroll_reply_carries_every_url_and_old_replies_still_decode() -> None:
    urls = tuple(natsconf.leaf_urls(LOOPBACK))
    reply = EnrollReply("d", "d", "", urls[0], "nats://127.0.0.1:4222", leaf_urls=urls,
                        hub_urls=("nats://127.0.0.1:4222", "nats://127.0.0.1:4223"))  # fmt: skip
    back = decode_enroll_reply(reply.to_json())
    assert back.leaf_urls == urls and back.all_leaf_urls() == list(urls)
    assert back.hub_urls == reply.hub_urls
    old = decode_enroll_reply(EnrollReply("d", "d", "", urls[0]).to_json())
    assert old.leaf_urls == () and old.all_leaf_urls() == [urls[0]]
    assert b"leaf_urls" not in EnrollReply("d", "d", "", urls[0]).to_json()


def test_the_leaf_remote_lists_every_node() -> None:
    base = LeafSettings("d", Path("/x"), "nats-leaf://h1:7422", user="d", password="pw")
    assert remote_conf(base)["url"] == "nats-leaf://d:pw@h1:7422"
    more = LeafSettings(
        "d", Path("/x"), "nats-leaf://h1:7422", more_leaf_urls=("nats-leaf://h2:7422",),
        credentials="/x/device.creds", ca_file="/ca.pem",
    )  # fmt: skip
    remote = remote_conf(more)
    assert remote["urls"] == ["tls://h1:7422", "tls://h2:7422"] and "url" not in remote
    assert remote["tls"] == {"timeout": 5, "ca_file": "/ca.pem"}
