"""The canonical JSON form and the bundle and container content hashes."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bundles import canonical_json, container_hash, content_hash, from_dict, parse_bundle

MINIMAL = """\
bundle: demo
version: 1.0.0
containers:
  - name: web
    image: "a:1"
"""

EXPLICIT = """\
# every default written out, keys in another order, flow style, comments
version: "1.0.0"
description: ""
update: {health_window: 1m, strategy: download-then-kill}
containers:
  - image: a:1
    name: web
    restart: unless-stopped
    network_mode: bridge
    env: {}
    labels: {}
    ports: []
    volumes: []
    resources: {memory: null, cpus: null}
bundle: demo
"""


def test_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_hash_format() -> None:
    h = content_hash(parse_bundle(MINIMAL))
    assert h.startswith("sha256:") and len(h) == 7 + 64
    c = container_hash(parse_bundle(MINIMAL).containers[0])
    assert len(c) == 16 and int(c, 16) >= 0


def test_defaults_written_or_omitted_hash_the_same() -> None:
    assert content_hash(parse_bundle(MINIMAL)) == content_hash(parse_bundle(EXPLICIT))


def test_json_and_yaml_hash_the_same() -> None:
    spec = parse_bundle(MINIMAL)
    assert content_hash(parse_bundle(json.dumps(spec.to_dict(), indent=4))) == content_hash(spec)


def test_any_change_changes_the_hash() -> None:
    spec = parse_bundle(MINIMAL)
    changed = dataclasses.replace(spec, description="x")
    assert content_hash(changed) != content_hash(spec)
    c = spec.containers[0]
    assert container_hash(dataclasses.replace(c, env=(("A", "1"),))) != container_hash(c)


def test_container_hash_ignores_bundle_version() -> None:
    a = parse_bundle(MINIMAL)
    b = parse_bundle(MINIMAL.replace("1.0.0", "1.0.1"))
    assert content_hash(a) != content_hash(b)
    assert container_hash(a.containers[0]) == container_hash(b.containers[0])


def test_to_dict_is_accepted_back() -> None:
    spec = parse_bundle(EXPLICIT)
    assert from_dict(spec.to_dict()) == spec
    assert from_dict(json.loads(canonical_json(spec.to_dict()))) == spec
