"""Table tests: every field rule of the bundle spec, with its error path and message."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bundles import BundleInvalid, from_dict


def base() -> dict[str, Any]:
    return {
        "bundle": "demo",
        "version": "1.0.0",
        "containers": [
            {"name": "web", "image": "registry.example.com/acme/web:1.0.0"},
            {"name": "worker", "image": "registry.example.com/acme/worker:1.0.0"},
        ],
    }


def setpath(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


DELETE = object()
C0 = ("containers", 0)


def errors_of(doc: Any, **kw: Any) -> dict[str, str]:
    with pytest.raises(BundleInvalid) as info:
        from_dict(doc, **kw)
    assert info.value.errors, "BundleInvalid must carry errors"
    return {e.path: e.message for e in info.value.errors}


# (where, value, expected error path, a fragment of the message)
INVALID: list[tuple[tuple[Any, ...], Any, str, str]] = [
    # bundle
    (("bundle",), DELETE, "bundle", "is required"),
    (("bundle",), "Demo", "bundle", "DNS label"),
    (("bundle",), "-demo", "bundle", "DNS label"),
    (("bundle",), "a" * 64, "bundle", "at most 63"),
    (("bundle",), 7, "bundle", "must be a string"),
    (("bundle",), "", "bundle", "DNS label"),
    # version
    (("version",), DELETE, "version", "is required"),
    (("version",), "1.2", "version", "semantic version"),
    (("version",), "01.2.3", "version", "semantic version"),
    (("version",), "v1.2.3", "version", "semantic version"),
    (("version",), 1.2, "version", "must be a string"),
    (("version",), "1.0.0-" + "a" * 200, "version", "at most 128"),
    # description
    (("description",), "x" * 1001, "description", "at most 1000"),
    (("description",), ["x"], "description", "must be a string"),
    # containers
    (("containers",), DELETE, "containers", "is required"),
    (("containers",), [], "containers", "at least 1"),
    (("containers",), {"web": {}}, "containers", "must be a list"),
    (
        ("containers",),
        [{"name": f"c{i}", "image": "a:1"} for i in range(33)],
        "containers",
        "at most 32",
    ),
    (("containers", 0), "web", "containers[0]", "must be a mapping"),
    ((*C0, "name"), DELETE, "containers[0].name", "is required"),
    ((*C0, "name"), "Web_1", "containers[0].name", "DNS label"),
    ((*C0, "name"), "worker", "containers[1].name", "duplicate container name"),
    ((*C0, "colour"), "blue", "containers[0].colour", "unknown field"),
    ((*C0, "imgae"), "x", "containers[0].imgae", "did you mean 'image'"),
    # image
    ((*C0, "image"), DELETE, "containers[0].image", "is required"),
    ((*C0, "image"), "nginx", "containers[0].image", "has no tag"),
    ((*C0, "image"), "nginx:latest", "containers[0].image", "'latest' tag"),
    ((*C0, "image"), "Nginx:1.25", "containers[0].image", "not a valid image reference"),
    ((*C0, "image"), "nginx:1.25 ", "containers[0].image", "whitespace"),
    ((*C0, "image"), "nginx@sha256:abc", "containers[0].image", "digest"),
    ((*C0, "image"), "nginx:-bad", "containers[0].image", "tag"),
    ((*C0, "image"), "", "containers[0].image", "must not be empty"),
    ((*C0, "image"), 5, "containers[0].image", "must be a string"),
    # command / args
    ((*C0, "command"), "nginx -g daemon off;", "containers[0].command", "not one string"),
    ((*C0, "command"), [], "containers[0].command", "must not be empty"),
    ((*C0, "command"), ["ok", 3], "containers[0].command[1]", "must be a string"),
    ((*C0, "args"), {"a": 1}, "containers[0].args", "must be a list of strings"),
    ((*C0, "args"), ["a\x00b"], "containers[0].args[0]", "NUL"),
    ((*C0, "args"), ["x"] * 257, "containers[0].args", "at most 256"),
    # env
    ((*C0, "env"), ["A=1"], "containers[0].env", "must be a mapping"),
    ((*C0, "env"), {"PORT": 8080}, "containers[0].env.PORT", 'quote it in YAML (e.g. "8080")'),
    ((*C0, "env"), {"DEBUG": True}, "containers[0].env.DEBUG", '"true"'),
    ((*C0, "env"), {"RATIO": 1.5}, "containers[0].env.RATIO", "must be a string"),
    ((*C0, "env"), {"EMPTY": None}, "containers[0].env.EMPTY", "must be a string, got null"),
    ((*C0, "env"), {"1ABC": "x"}, "containers[0].env.1ABC", "environment variable name"),
    ((*C0, "env"), {"A-B": "x"}, "containers[0].env.A-B", "environment variable name"),
    ((*C0, "env"), {"A": ["x"]}, "containers[0].env.A", "must be a string"),
    ((*C0, "env"), {"A": "\ud800"}, "containers[0].env.A", "unpaired surrogates"),
    # ports
    ((*C0, "ports"), {"container": 80}, "containers[0].ports", "must be a list"),
    ((*C0, "ports"), ["8080:80"], "containers[0].ports[0]", "must be a mapping"),
    ((*C0, "ports"), [{"host": 80}], "containers[0].ports[0].container", "is required"),
    ((*C0, "ports"), [{"container": 0}], "containers[0].ports[0].container", "must be 1-65535"),
    ((*C0, "ports"), [{"container": 65536}], "containers[0].ports[0].container", "must be 1-65535"),
    (
        (*C0, "ports"),
        [{"container": "80"}],
        "containers[0].ports[0].container",
        "must be an integer",
    ),
    (
        (*C0, "ports"),
        [{"container": True}],
        "containers[0].ports[0].container",
        "must be an integer",
    ),
    (
        (*C0, "ports"),
        [{"container": 80.0}],
        "containers[0].ports[0].container",
        "must be an integer",
    ),
    ((*C0, "ports"), [{"container": 80, "host": 70000}], "containers[0].ports[0].host", "1-65535"),
    (
        (*C0, "ports"),
        [{"container": 80, "protocol": "sctp"}],
        "containers[0].ports[0].protocol",
        "tcp, udp",
    ),
    (
        (*C0, "ports"),
        [{"container": 80, "host_ip": "300.1.1.1"}],
        "containers[0].ports[0].host_ip",
        "not an IP address",
    ),
    (
        (*C0, "ports"),
        [{"container": 80, "hostport": 1}],
        "containers[0].ports[0].hostport",
        "unknown field",
    ),
    (
        (*C0, "ports"),
        [{"container": 80, "host": 80}, {"container": 81, "host": 80}],
        "containers[0].ports[1].host",
        "already published by containers[0].ports[0]",
    ),
    (
        (*C0, "ports"),
        [{"container": 80, "host": 80, "host_ip": "127.0.0.1"}, {"container": 81, "host": 80}],
        "containers[0].ports[1].host",
        "already published",
    ),
    ((*C0, "ports"), [{"container": 80}] * 65, "containers[0].ports", "at most 64"),
    # volumes
    ((*C0, "volumes"), [{"target": "/data"}], "containers[0].volumes[0].source", "is required"),
    ((*C0, "volumes"), [{"source": "data"}], "containers[0].volumes[0].target", "is required"),
    (
        (*C0, "volumes"),
        [{"source": "data", "target": "data"}],
        "containers[0].volumes[0].target",
        "absolute path",
    ),
    (
        (*C0, "volumes"),
        [{"source": "data", "target": "/"}],
        "containers[0].volumes[0].target",
        "must not be /",
    ),
    (
        (*C0, "volumes"),
        [{"source": "data", "target": "/a/../etc"}],
        "containers[0].volumes[0].target",
        "'..'",
    ),
    (
        (*C0, "volumes"),
        [{"source": "/srv/data", "target": "/data"}],
        "containers[0].volumes[0].source",
        "type: bind",
    ),
    (
        (*C0, "volumes"),
        [{"source": "srv/data", "target": "/data", "type": "bind"}],
        "containers[0].volumes[0].source",
        "absolute path",
    ),
    (
        (*C0, "volumes"),
        [{"source": "d", "target": "/data"}],
        "containers[0].volumes[0].source",
        "volume name",
    ),
    (
        (*C0, "volumes"),
        [{"source": "my data", "target": "/data"}],
        "containers[0].volumes[0].source",
        "volume name",
    ),
    (
        (*C0, "volumes"),
        [{"source": "data", "target": "/data", "type": "tmpfs"}],
        "containers[0].volumes[0].type",
        "volume, bind",
    ),
    (
        (*C0, "volumes"),
        [{"source": "data", "target": "/data", "read_only": "yes"}],
        "containers[0].volumes[0].read_only",
        "true or false",
    ),
    (
        (*C0, "volumes"),
        [{"source": "data", "target": "/d"}, {"source": "logs", "target": "/d"}],
        "containers[0].volumes[1].target",
        "already mounted by volumes[0]",
    ),
    # restart / network_mode
    (
        (*C0, "restart"),
        "sometimes",
        "containers[0].restart",
        "no, always, on-failure, unless-stopped",
    ),
    ((*C0, "restart"), False, "containers[0].restart", 'write "no" in quotes'),
    ((*C0, "network_mode"), "macvlan", "containers[0].network_mode", "bridge, host, none"),
    ((*C0, "network_mode"), "host", None, ""),  # valid on its own; see the combinations below
    # healthcheck
    ((*C0, "healthcheck"), "curl localhost", "containers[0].healthcheck", "must be a mapping"),
    ((*C0, "healthcheck"), {"port": 80}, "containers[0].healthcheck.type", "is required"),
    ((*C0, "healthcheck"), {"type": "grpc"}, "containers[0].healthcheck.type", "http, tcp, exec"),
    (
        (*C0, "healthcheck"),
        {"type": "http"},
        "containers[0].healthcheck.port",
        "is required for http probes",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "tcp"},
        "containers[0].healthcheck.port",
        "is required for tcp probes",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "http", "port": 80, "path": "health"},
        "containers[0].healthcheck.path",
        "must start with /",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "tcp", "port": 80, "path": "/x"},
        "containers[0].healthcheck.path",
        "only to http",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "tcp", "port": 80, "command": ["x"]},
        "containers[0].healthcheck.command",
        "only to exec",
    ),
    ((*C0, "healthcheck"), {"type": "exec"}, "containers[0].healthcheck.command", "is required"),
    (
        (*C0, "healthcheck"),
        {"type": "exec", "command": []},
        "containers[0].healthcheck.command",
        "is required",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "exec", "command": "true"},
        "containers[0].healthcheck.command",
        "not one string",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "exec", "command": ["true"], "port": 1},
        "containers[0].healthcheck.port",
        "only to http and tcp",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "tcp", "port": 80, "interval": 0},
        "containers[0].healthcheck.interval",
        "greater than zero",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "tcp", "port": 80, "interval": "10"},
        "containers[0].healthcheck.interval",
        '"10s"',
    ),
    (
        (*C0, "healthcheck"),
        {"type": "tcp", "port": 80, "interval": "10 s"},
        "containers[0].healthcheck.interval",
        "duration",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "tcp", "port": 80, "interval": "25h"},
        "containers[0].healthcheck.interval",
        "at most 24h",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "tcp", "port": 80, "timeout": -1},
        "containers[0].healthcheck.timeout",
        "negative",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "tcp", "port": 80, "timeout": float("nan")},
        "containers[0].healthcheck.timeout",
        "finite",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "tcp", "port": 80, "start_period": True},
        "containers[0].healthcheck.start_period",
        "duration",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "tcp", "port": 80, "retries": 0},
        "containers[0].healthcheck.retries",
        "must be 1-100",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "tcp", "port": 80, "retries": 2.5},
        "containers[0].healthcheck.retries",
        "integer",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "tcp", "port": 80, "every": "1s"},
        "containers[0].healthcheck.every",
        "unknown field",
    ),
    (
        (*C0, "healthcheck"),
        {"type": "tcp", "port": 80, "interval": 10**400},
        "containers[0].healthcheck.interval",
        "finite",
    ),
    # resources
    (
        (*C0, "resources"),
        {"memory": "64m"},
        "containers[0].resources.memory",
        "unit 'm' is not accepted",
    ),
    ((*C0, "resources"), {"memory": "1.5Gi"}, "containers[0].resources.memory", "whole number"),
    ((*C0, "resources"), {"memory": "lots"}, "containers[0].resources.memory", '"64Mi"'),
    ((*C0, "resources"), {"memory": 1024}, "containers[0].resources.memory", "at least 6Mi"),
    ((*C0, "resources"), {"memory": True}, "containers[0].resources.memory", "must be bytes"),
    ((*C0, "resources"), {"cpus": 0}, "containers[0].resources.cpus", "greater than 0"),
    ((*C0, "resources"), {"cpus": -1.5}, "containers[0].resources.cpus", "greater than 0"),
    ((*C0, "resources"), {"cpus": "2"}, "containers[0].resources.cpus", "positive number"),
    ((*C0, "resources"), {"cpus": 2000}, "containers[0].resources.cpus", "at most 1024"),
    ((*C0, "resources"), {"cpus": 10**400}, "containers[0].resources.cpus", "at most 1024"),
    ((*C0, "resources"), {"cpus": float("inf")}, "containers[0].resources.cpus", "at most 1024"),
    ((*C0, "resources"), {"cpus": float("nan")}, "containers[0].resources.cpus", "greater than 0"),
    ((*C0, "resources"), {"gpus": 1}, "containers[0].resources.gpus", "unknown field"),
    # labels
    (
        (*C0, "labels"),
        {"io.signalbeam.bundle": "x"},
        "containers[0].labels.io.signalbeam.bundle",
        "reserved",
    ),
    ((*C0, "labels"), {"IO.SignalBeam.x": "x"}, "containers[0].labels.IO.SignalBeam.x", "reserved"),
    ((*C0, "labels"), {"bad key": "x"}, "containers[0].labels.bad key", "not a valid label key"),
    ((*C0, "labels"), {"tier": 1}, "containers[0].labels.tier", "must be a string"),
    ((*C0, "labels"), ["tier=web"], "containers[0].labels", "must be a mapping"),
    # update
    (
        ("update",),
        {"strategy": "blue-green"},
        "update.strategy",
        "download-then-kill, kill-then-download",
    ),
    (("update",), {"health_window": 0}, "update.health_window", "greater than zero"),
    (("update",), {"health_window": "soon"}, "update.health_window", "duration"),
    (("update",), {"rollback": True}, "update.rollback", "unknown field"),
    (("update",), "fast", "update", "must be a mapping"),
    # top level
    (("kind",), "Bundle", "kind", "unknown field"),
]


@pytest.mark.parametrize(
    ("where", "value", "path", "fragment"),
    [case for case in INVALID if case[2] is not None],
    ids=[f"{c[2]}:{c[3]}" for c in INVALID if c[2] is not None],
)
def test_field_rule(where: tuple[Any, ...], value: Any, path: str, fragment: str) -> None:
    errors = errors_of(setpath(base(), where, value))
    assert path in errors, errors
    assert fragment in errors[path]


def test_non_string_key_is_reported_at_its_parent() -> None:
    errors = errors_of(setpath(base(), (*C0, "env"), {1: "x"}))
    assert "must be a string" in errors["containers[0].env"]


def test_whole_document_must_be_a_mapping() -> None:
    assert "must be a mapping" in errors_of(["bundle"])["$"]
    assert "is empty" in errors_of(None)["$"]


def test_host_network_cannot_publish_ports() -> None:
    doc = setpath(base(), (*C0, "network_mode"), "host")
    doc = setpath(doc, (*C0, "ports"), [{"container": 80}])
    assert "network_mode host" in errors_of(doc)["containers[0].ports"]
    doc = setpath(doc, (*C0, "network_mode"), "none")
    assert "network_mode none" in errors_of(doc)["containers[0].ports"]


def test_host_ports_clash_across_containers() -> None:
    doc = setpath(base(), (*C0, "ports"), [{"container": 80, "host": 8080}])
    doc = setpath(doc, ("containers", 1, "ports"), [{"container": 81, "host": 8080}])
    errors = errors_of(doc)
    assert "already published by containers[0].ports[0]" in errors["containers[1].ports[0].host"]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"container": 1, "host": 80}, {"container": 1, "host": 80, "protocol": "udp"}),
        (
            {"container": 1, "host": 80, "host_ip": "127.0.0.1"},
            {"container": 1, "host": 80, "host_ip": "127.0.0.2"},
        ),
        ({"container": 1, "host": 80}, {"container": 1, "host": 81}),
        ({"container": 1}, {"container": 1}),  # unpublished: no host port, no clash
    ],
)
def test_host_ports_that_do_not_clash(a: dict[str, Any], b: dict[str, Any]) -> None:
    from_dict(setpath(base(), (*C0, "ports"), [a, b]))


def test_latest_and_untagged_allowed_on_request() -> None:
    for image in ("nginx", "nginx:latest", "localhost:5000/x"):
        spec = from_dict(setpath(base(), (*C0, "image"), image), allow_latest=True)
        assert spec.containers[0].image == image


@pytest.mark.parametrize(
    "image",
    [
        "nginx:1.25",
        "library/nginx:1.25-alpine",
        "docker.io/library/nginx:1.25",
        "localhost:5000/acme/app:v2",
        "registry.example.com:5000/a/b/c:1.0.0_rc1",
        "[::1]:5000/acme/app:1",
        "ghcr.io/acme/app__x.y-z:1",
        "nginx@sha256:" + "a" * 64,
        "nginx:latest@sha256:" + "0" * 64,
        "REGISTRY.example.com/acme/app:1",
    ],
)
def test_valid_images(image: str) -> None:
    assert from_dict(setpath(base(), (*C0, "image"), image)).containers[0].image == image


def test_defaults() -> None:
    spec = from_dict(base())
    c = spec.containers[0]
    assert spec.description == ""
    assert spec.update.strategy == "download-then-kill"
    assert spec.update.health_window == 60.0
    assert c.command is None and c.args is None
    assert c.env == () and c.labels == () and c.ports == () and c.volumes == ()
    assert c.restart == "unless-stopped"
    assert c.network_mode == "bridge"
    assert c.healthcheck is None
    assert c.resources.memory is None and c.resources.cpus is None


def test_null_means_default() -> None:
    doc = setpath(base(), (*C0, "env"), None)
    doc = setpath(doc, ("description",), None)
    assert from_dict(doc) == from_dict(base())


def test_values_are_normalised() -> None:
    container = {
        "name": "web",
        "image": "a:1",
        "env": {"B": "2", "A": "1"},
        "labels": {"z": "1", "a": "2"},
        "ports": [{"container": 80, "host": 80, "host_ip": "::0001"}],
        "healthcheck": {
            "type": "http",
            "port": 80,
            "interval": "1m30s",
            "timeout": "500ms",
            "start_period": 2,
        },
        "resources": {"memory": "64Mi", "cpus": 1},
    }
    spec = from_dict({"bundle": "x", "version": "1.0.0", "containers": [container]})
    c = spec.containers[0]
    assert c.env == (("A", "1"), ("B", "2"))
    assert c.labels == (("a", "2"), ("z", "1"))
    assert c.ports[0].host_ip == "::1"
    assert c.healthcheck is not None
    assert (c.healthcheck.interval, c.healthcheck.timeout) == (90.0, 0.5)
    assert c.healthcheck.start_period == 2.0
    assert c.resources.memory == 64 * 1024 * 1024
    assert c.resources.cpus == 1.0 and isinstance(c.resources.cpus, float)


@pytest.mark.parametrize(
    ("memory", "size"),
    [
        (6291456, 6291456),
        ("128M", 128_000_000),
        ("1Gi", 2**30),
        ("512Ki", None),
        ("7000k", 7_000_000),
    ],
)
def test_memory_units(memory: Any, size: int | None) -> None:
    doc = setpath(base(), (*C0, "resources"), {"memory": memory})
    if size is None:
        assert "at least 6Mi" in errors_of(doc)["containers[0].resources.memory"]
    else:
        assert from_dict(doc).containers[0].resources.memory == size


@pytest.mark.parametrize(
    "probe",
    [
        {"type": "http", "port": 8080, "path": "/healthz"},
        {"type": "tcp", "port": 5432},
        {"type": "exec", "command": ["pg_isready"]},
        # BundleSpec.to_dict() writes every field; the defaults must validate again.
        {"type": "exec", "command": ["true"], "port": None, "path": "/"},
        {"type": "tcp", "port": 1, "command": [], "path": "/"},
    ],
)
def test_valid_probes(probe: dict[str, Any]) -> None:
    from_dict(setpath(base(), (*C0, "healthcheck"), probe))


def test_every_error_at_once() -> None:
    doc = base()
    doc["bundle"] = "Bad Name"
    doc["version"] = "one"
    doc["containers"][0]["ports"] = [{"container": 0}]
    doc["containers"][0]["env"] = {"X": 1}
    doc["containers"][1]["restart"] = "never"
    doc["containers"][1]["surprise"] = True
    errors = errors_of(doc)
    assert set(errors) == {
        "bundle",
        "version",
        "containers[0].ports[0].container",
        "containers[0].env.X",
        "containers[1].restart",
        "containers[1].surprise",
    }


def test_error_count_is_bounded() -> None:
    doc = setpath(base(), (*C0, "env"), {f"V{i}": i for i in range(500)})
    with pytest.raises(BundleInvalid) as info:
        from_dict(doc)
    assert len(info.value.errors) == 201
    assert info.value.errors[-1].path == "$"
    assert "300 more errors" in info.value.errors[-1].message
