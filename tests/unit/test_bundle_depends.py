"""``depends_on``: both spellings, every refusal with its source line, and hash stability."""

from __future__ import annotations

import graphlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundles import BundleInvalid, container_hash, content_hash, from_dict, parse_bundle
from bundles.model import Dependency

# A bundle written before depends_on existed: its hashes are pinned, as agents and the hub
# compare them with stored ones.
OLD = """\
bundle: demo
version: 1.0.0
containers:
  - name: web
    image: "a:1"
    ports: [{container: 80, host: 8080}]
    healthcheck: {type: http, port: 80, path: /health}
    env: {A: "1"}
  - name: db
    image: "b:2"
"""
OLD_HASH = "sha256:b40c2c57bca555331898ee5962a5ce3239ffe77b6f7295286c2847b18e43a0fb"
OLD_CONTAINER_HASHES = ["3820f68f2a79d812", "7400dff4eb5ee247"]


def _errors(text: str) -> list[tuple[str, str, int | None]]:
    with pytest.raises(BundleInvalid) as info:
        parse_bundle(text)
    return [(e.path, e.message, e.line) for e in info.value.errors]


def test_hashes_of_bundles_without_depends_on_do_not_change() -> None:
    spec = parse_bundle(OLD)
    assert content_hash(spec) == OLD_HASH
    assert [container_hash(c) for c in spec.containers] == OLD_CONTAINER_HASHES
    assert "depends_on" not in spec.to_dict()["containers"][0]
    # Writing it out empty means the same as leaving it out.
    empty = OLD.replace('image: "b:2"', 'image: "b:2"\n    depends_on: []')
    assert content_hash(parse_bundle(empty)) == OLD_HASH


def test_both_spellings_and_the_canonical_form() -> None:
    short = OLD.replace('    env: {A: "1"}', '    env: {A: "1"}\n    depends_on: [db]')
    long = OLD.replace(
        '    env: {A: "1"}', '    env: {A: "1"}\n    depends_on: {db: {condition: service_started}}'
    )
    a, b = parse_bundle(short), parse_bundle(long)
    assert a == b
    assert a.containers[0].depends_on == (Dependency("db", "service_started"),)
    assert a.to_dict()["containers"][0]["depends_on"] == {"db": {"condition": "service_started"}}
    assert from_dict(a.to_dict()) == a  # the canonical form validates again
    # Part of the bundle's hash when present, but not of the container's: editing the start
    # order does not recreate a container.
    assert content_hash(a) != OLD_HASH
    assert [container_hash(c) for c in a.containers] == OLD_CONTAINER_HASHES
    healthy = OLD.replace(
        '    env: {A: "1"}', '    env: {A: "1"}\n    depends_on: {db: {condition: service_healthy}}'
    )
    assert content_hash(parse_bundle(healthy)) != content_hash(a)


BASE = """\
bundle: demo
version: 1.0.0
containers:
  - name: web
    image: "a:1"
    depends_on: {WEB}
  - name: db
    image: "a:1"
    depends_on: {DB}
  - name: cache
    image: "a:1"
"""


def _doc(web: str = "[]", db: str = "[]") -> str:
    return BASE.replace("{WEB}", web).replace("{DB}", db)


@pytest.mark.parametrize(
    ("web", "db", "expected"),
    [
        ("[nope]", "[]", [("containers[0].depends_on[0]", "unknown service 'nope'", 6)]),
        ("{nope: {}}", "[]", [("containers[0].depends_on.nope", "unknown service 'nope'", 6)]),
        ("[web]", "[]", [("containers[0].depends_on[0]", "cannot depend on itself", 6)]),
        ("[db]", "[web]", [("containers[0].depends_on[0]", "cycle: web -> db -> web", 6)]),
        ("[db, db]", "[]", [("containers[0].depends_on[1]", "'db' is listed twice", 6)]),
        (
            "{db: {condition: service_done}}",
            "[]",
            [("containers[0].depends_on.db.condition", "must be one of service_started", 6)],
        ),
        ("{db: {when: x}}", "[]", [("containers[0].depends_on.db.when", "unknown field", 6)]),
        ("db", "[]", [("containers[0].depends_on", "must be a list of service names", 6)]),
        ("[Bad_Name]", "[]", [("containers[0].depends_on[0]", "must be a DNS label", 6)]),
    ],
)
def test_refusals_name_the_service_and_the_line(
    web: str, db: str, expected: list[tuple[str, str, int]]
) -> None:
    got = _errors(_doc(web, db))
    assert len(got) == len(expected), got
    for (path, message, line), (want_path, want_text, want_line) in zip(got, expected, strict=True):
        assert path == want_path and want_text in message and line == want_line, got


def test_a_longer_cycle_is_named_in_full_on_its_own_lines() -> None:
    text = """\
bundle: demo
version: 1.0.0
containers:
  - name: a
    image: "x:1"
    depends_on:
      b: {condition: service_healthy}
  - name: b
    image: "x:1"
    depends_on:
      - c
  - name: c
    image: "x:1"
    depends_on: [a]
"""
    got = _errors(text)
    assert got == [("containers[2].depends_on[0]", "dependency cycle: c -> a -> b -> c", 14)]


NAMES = ["s0", "s1", "s2", "s3", "s4"]


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 5),
    edges=st.sets(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=12),
    healthy=st.booleans(),
)
def test_a_graph_validates_exactly_when_it_is_acyclic(
    n: int, edges: set[tuple[int, int]], healthy: bool
) -> None:
    edges = {(a, b) for a, b in edges if a < n and b < n}
    condition = "service_healthy" if healthy else "service_started"
    doc = {
        "bundle": "g",
        "version": "1.0.0",
        "containers": [
            {
                "name": NAMES[i],
                "image": "x:1",
                "depends_on": {NAMES[b]: {"condition": condition} for a, b in edges if a == i},
            }
            for i in range(n)
        ],
    }
    graph = {NAMES[i]: {NAMES[b] for a, b in edges if a == i} for i in range(n)}
    try:
        graphlib.TopologicalSorter(graph).prepare()
        acyclic = True
    except graphlib.CycleError:
        acyclic = False
    if acyclic:
        spec = from_dict(doc)
        assert {c.name: {d.service for d in c.depends_on} for c in spec.containers} == graph
    else:
        with pytest.raises(BundleInvalid) as info:
            from_dict(doc)
        messages = [e.message for e in info.value.errors]
        assert all("cycle" in m or "itself" in m for m in messages), messages
        assert any(f"{a} -> {a}" not in m for m in messages for a in NAMES)
