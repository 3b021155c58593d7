"""Pure helpers of the Docker-API adapter (no engine needed): how engine documents map.

Kept beside the runtime integration tests so all adapter tests live together.
"""

from __future__ import annotations

import json

from agent.runtime.base import LABEL_DEVICE, LABEL_SERVICE, LABEL_SPEC_HASH, CreateRequest, PortSpec
from agent.runtime.detect import candidate_urls
from agent.runtime.docker_wire import (
    PullTally,
    create_body,
    demux,
    event_from_raw,
    healthcheck_from_config,
    observed_from_inspect,
    parse_time,
    split_ref,
    stats_from_raw,
)


def test_parse_time_handles_go_nanoseconds_and_zero() -> None:
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("2026-11-26T18:05:01.123456789Z") == parse_time("2026-11-26T18:05:01.123456Z")
    assert parse_time("2026-11-26T18:05:01+00:00") is not None
    assert parse_time(None) is None


def inspect_doc(status: str, **extra: object) -> dict[str, object]:
    return {
        "Id": "abc",
        "Name": "/sb-web",
        "Created": "2026-11-26T18:00:00Z",
        "RestartCount": 2,
        "State": {"Status": status, "ExitCode": 1, "StartedAt": "2026-11-26T18:00:01Z",
                  "Health": {"Status": "starting"}},
        "Config": {"Image": "reg/web:1", "Labels": {LABEL_DEVICE: "d", LABEL_SERVICE: "web",
                                                     LABEL_SPEC_HASH: "h"}},
        "HostConfig": {"NetworkMode": "bridge"},
        "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                                      "81/tcp": None}},
        **extra,
    }  # fmt: skip


def test_observed_from_inspect_maps_podman_states_and_ports() -> None:
    obs = observed_from_inspect(inspect_doc("stopped"))
    assert obs is not None
    assert (obs.state, obs.exit_code, obs.restart_count, obs.name) == ("exited", 1, 2, "sb-web")
    assert obs.health == "starting" and obs.service == "web" and obs.spec_hash == "h"
    assert [(p.container, p.host) for p in obs.ports] == [(80, 8080), (81, None)]
    assert observed_from_inspect(inspect_doc("configured")).state == "created"  # type: ignore[union-attr]
    running = observed_from_inspect(inspect_doc("running"))
    assert running is not None and running.exit_code is None
    unlabelled = inspect_doc("running")
    unlabelled["Config"] = {"Labels": {}}
    assert observed_from_inspect(unlabelled) is None


def test_create_body() -> None:
    req = CreateRequest(
        name="n", image="i:1", labels={LABEL_DEVICE: "d"}, command=("/bin/sh",), args=("-c", "x"),
        env={"B": "2", "A": "1"}, ports=(PortSpec(80, 8080),), memory=64, cpus=0.5,
    )  # fmt: skip
    body = create_body(req)
    assert body["Env"] == ["A=1", "B=2"]
    assert body["Entrypoint"] == ["/bin/sh"] and body["Cmd"] == ["-c", "x"]
    assert body["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]
    }
    assert body["HostConfig"]["NanoCpus"] == 500_000_000 and body["HostConfig"]["Memory"] == 64
    host = create_body(CreateRequest(name="n", image="i", labels={}, ports=(PortSpec(80, 80),),
                                     network_mode="host"))  # fmt: skip
    assert "PortBindings" not in host["HostConfig"] and "ExposedPorts" not in host


def test_healthcheck_from_config() -> None:
    hc = healthcheck_from_config(
        {"Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 2_000_000_000, "Retries": 2}
    )
    assert hc is not None and hc.command == ("/bin/sh", "-c", "wget -q localhost")
    assert hc.interval == 2.0 and hc.retries == 2 and hc.timeout == 30.0
    assert healthcheck_from_config({"Test": ["NONE"]}) is None
    assert healthcheck_from_config({}) is None
    cmd = healthcheck_from_config({"Test": ["CMD", "/bin/false"]})
    assert cmd is not None and cmd.command == ("/bin/false",)


def test_pull_tally_sums_layers() -> None:
    t = PullTally("i:1")
    assert t.feed({"status": "Pulling from x", "id": "1"}) is None
    t.feed({"status": "Pulling fs layer", "id": "a"})
    t.feed({"status": "Downloading", "id": "a", "progressDetail": {"current": 5, "total": 10}})
    p = t.feed({"status": "Downloading", "id": "b", "progressDetail": {"current": 1, "total": 4}})
    assert p is not None and (p.current_bytes, p.total_bytes, p.layers_total) == (6, 14, 2)
    p = t.feed({"status": "Pull complete", "id": "a"})
    assert p is not None and p.layers_done == 1 and p.current_bytes == 11


def test_demux_and_split_ref() -> None:
    framed = b"\x01\x00\x00\x00\x00\x00\x00\x03out" + b"\x02\x00\x00\x00\x00\x00\x00\x03err"
    assert demux(framed) == "outerr"
    assert demux(b"plain") == "plain"
    assert split_ref("127.0.0.1:5000/a/b:1.0") == ("127.0.0.1:5000/a/b", "1.0")
    assert split_ref("127.0.0.1:5000/a/b") == ("127.0.0.1:5000/a/b", "latest")
    assert split_ref("a@sha256:" + "0" * 64)[1] is None


def test_stats_and_events() -> None:
    raw = {
        "cpu_stats": {
            "cpu_usage": {"total_usage": 200},
            "system_cpu_usage": 2000,
            "online_cpus": 2,
        },
        "precpu_stats": {"cpu_usage": {"total_usage": 100}, "system_cpu_usage": 1000},
        "memory_stats": {"usage": 1234, "limit": 9999},
    }
    s = stats_from_raw("c", raw)
    assert s.cpu_percent == 20.0 and s.memory_bytes == 1234 and s.memory_limit == 9999
    ev = {"Action": "health_status: healthy", "timeNano": 2_000_000_000,
          "Actor": {"ID": "c1", "Attributes": {LABEL_DEVICE: "d", LABEL_SERVICE: "web"}}}  # fmt: skip
    out = event_from_raw(ev, "d")
    assert out is not None and out.action == "health_status" and out.time == 2.0
    assert event_from_raw(ev, "other") is None
    assert json.dumps(out.attributes)


def test_candidate_urls_order() -> None:
    env = {"DOCKER_HOST": "/tmp/x.sock", "XDG_RUNTIME_DIR": "/run/user/1"}
    urls = candidate_urls(None, env)
    assert urls[0] == "unix:///tmp/x.sock" and urls[-1] == "unix:///run/user/1/podman/podman.sock"
    assert candidate_urls("tcp://127.0.0.1:2375", env) == ["tcp://127.0.0.1:2375"]


def test_podman_stores_an_exec_probe_as_a_json_argv_and_reads_its_last_run() -> None:
    from agent.runtime.base import ImageHealthcheck
    from agent.runtime.podman import healthcheck_result, podman_healthcheck

    probe = ImageHealthcheck(("/bin/sh", "-c", "echo a b; exit 3"), 2.0, 1.5, 2, 4.0)
    hc = podman_healthcheck(probe)
    # One JSON-array string: Podman's compat create re-splits anything else on whitespace.
    assert json.loads(hc["Test"][0]) == ["/bin/sh", "-c", "echo a b; exit 3"]
    assert len(hc["Test"]) == 1 and hc["Timeout"] == 1_500_000_000 and hc["Retries"] == 2
    assert hc["Interval"] >= 3600 * 1_000_000_000  # Podman's own schedule out of the way
    # What Podman stores from it is the argv again, so exec() recognises its own probe.
    stored = {"Test": ["CMD", "/bin/sh", "-c", "echo a b; exit 3"]}
    assert healthcheck_from_config(stored) == ImageHealthcheck(probe.command, 30.0, 30.0, 3, 0.0)
    log = {"Start": "x", "End": "y", "ExitCode": 1, "Output": "a b"}
    assert healthcheck_result({"State": {"Health": {"Log": [log]}}}) is not None
    res = healthcheck_result({"State": {"Health": {"Log": [{**log, "ExitCode": 0}, log]}}})
    assert res is not None and res.exit_code == 1 and res.output == "a b"
    assert healthcheck_result({"State": {"Health": {"Log": None}}}) is None
