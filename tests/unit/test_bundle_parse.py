"""Bundle source text: YAML and JSON, line numbers, size bound, duplicates, files, examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bundles
from bundles import BundleError, BundleInvalid, load_file, parse_bundle
from bundles.validate import MAX_BUNDLE_BYTES

EXAMPLES = Path(bundles.__file__).parent / "examples"

GOOD_YAML = """\
bundle: demo
version: 1.0.0
containers:
  - name: web
    image: registry.example.com/acme/web:1.0.0
    ports:
      - container: 80
        host: 8080
"""


def errors_of(text: str | bytes, **kw: object) -> list[bundles.FieldError]:
    with pytest.raises(BundleInvalid) as info:
        parse_bundle(text, **kw)  # type: ignore[arg-type]
    return info.value.errors


def by_path(errors: list[bundles.FieldError]) -> dict[str, bundles.FieldError]:
    return {e.path: e for e in errors}


def test_yaml_and_json_give_the_same_spec() -> None:
    spec = parse_bundle(GOOD_YAML)
    assert parse_bundle(json.dumps(spec.to_dict())) == spec
    assert parse_bundle(json.dumps(spec.to_dict(), indent="\t").encode()) == spec
    assert parse_bundle(GOOD_YAML.encode("utf-8-sig")) == spec


def test_yaml_flow_style_that_is_not_json() -> None:
    text = "{bundle: demo, version: 1.0.0, containers: [{name: web, image: 'a:1'}]}"
    assert parse_bundle(text).bundle == "demo"


def test_yaml_line_numbers() -> None:
    text = GOOD_YAML.replace("container: 80", "container: 0").replace("host: 8080", "hots: 1")
    errors = by_path(errors_of(text))
    assert errors["containers[0].ports[0].container"].line == 7
    assert errors["containers[0].ports[0].hots"].line == 8
    assert str(errors["containers[0].ports[0].container"]) == (
        "containers[0].ports[0].container: must be 1-65535 (line 7)"
    )


def test_missing_field_points_at_its_parent() -> None:
    text = "bundle: demo\nversion: 1.0.0\ncontainers:\n  - name: web\n"
    assert by_path(errors_of(text))["containers[0].image"].line == 4


def test_json_line_numbers() -> None:
    doc = json.loads(json.dumps(parse_bundle(GOOD_YAML).to_dict()))
    doc["containers"][0]["ports"][0]["container"] = 0
    text = json.dumps(doc, indent=2)
    line = by_path(errors_of(text))["containers[0].ports[0].container"].line
    assert line is not None
    assert '"container": 0' in text.splitlines()[line - 1]


def test_str_lists_every_error_one_per_line() -> None:
    text = "bundle: BAD\nversion: x\ncontainers: []\n"
    with pytest.raises(BundleInvalid) as info:
        parse_bundle(text, source="demo.yaml")
    assert info.value.source == "demo.yaml"
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("bundle: ") and lines[0].endswith("(line 1)")
    assert lines[1].startswith("version: ") and lines[1].endswith("(line 2)")
    assert lines[2] == "containers: must have at least 1 item (line 3)"


def test_from_dict_errors_have_no_line() -> None:
    with pytest.raises(BundleInvalid) as info:
        bundles.from_dict({"bundle": "x"})
    assert all(e.line is None for e in info.value.errors)
    assert str(info.value).splitlines() == [
        "version: is required",
        "containers: is required",
    ]


@pytest.mark.parametrize(
    ("text", "fragment", "line"),
    [
        ("bundle: [unclosed\n", "YAML syntax error", 2),
        ("a: 1\n b: 2\n", "YAML syntax error", 2),
        ("--- {}\n--- {}\n", "YAML syntax error", 2),
        ("bundle: !!python/object:os.system x\n", "YAML syntax error", 1),
        ("d: 2001-02-30\n", "reads as a timestamp but is not a valid one", 1),
        ("x: " + "[" * 5000 + "]" * 5000 + "\n", "", 1),
        ("", "is empty", 1),
        ("# only a comment\n", "is empty", 1),
        ("just a string\n", "must be a mapping", 1),
    ],
)
def test_unparseable_text(text: str, fragment: str, line: int | None) -> None:
    errors = errors_of(text)
    # A scalar PyYAML cannot construct is named by its field; the rest are about the text.
    assert errors[0].path == ("d" if text.startswith("d:") else "$")
    assert fragment in errors[0].message
    if line is not None:
        assert errors[0].line == line


def test_not_utf8() -> None:
    assert "not UTF-8" in errors_of(b"bundle: \xff\xfe\n")[0].message


def test_size_bound() -> None:
    big = GOOD_YAML + "#" * MAX_BUNDLE_BYTES
    errors = errors_of(big)
    assert errors[0].path == "$"
    assert str(MAX_BUNDLE_BYTES) in errors[0].message


def test_duplicate_keys_are_errors() -> None:
    text = GOOD_YAML.replace("    ports:", "    name: api\n    ports:")
    err = by_path(errors_of(text))["containers[0].name"]
    assert err.message == "duplicate key"
    assert err.line == 6
    text = '{"bundle": "a", "version": "1.0.0", "bundle": "b", "containers": []}'
    assert by_path(errors_of(text))["bundle"].message == "duplicate key"


def test_yaml_anchors_and_merge_keys_work() -> None:
    text = """\
bundle: demo
version: 1.0.0
containers:
  - &base
    name: web
    image: "a:1"
    env: &env {A: "1"}
  - <<: *base
    name: api
    env: *env
"""
    spec = parse_bundle(text)
    assert [c.name for c in spec.containers] == ["web", "api"]
    assert spec.containers[1].env == (("A", "1"),)


def test_alias_bomb_stays_cheap() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 30):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    errors = errors_of("\n".join(lines) + "\n")
    assert all(e.message.startswith("unknown field") for e in errors if e.path.startswith("a"))


def test_alias_bomb_in_a_checked_field_stays_cheap() -> None:
    # 10**29 leaves if expanded; errors must describe the value, never render it.
    lines = ['x: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 30):
        lines.append(f"y{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    doc = "bundle: demo\nversion: 1.0.0\ncontainers:\n  - name: web\n    image: a:1\n"
    text = doc + "    restart: *a29\n    env: {A: *a29}\n    ports: [*a29]\n"
    text = "\n".join(lines) + "\n" + text
    errors = by_path(errors_of(text))
    assert "got a list" in errors["containers[0].restart"].message
    assert "got a list" in errors["containers[0].env.A"].message


def test_load_file(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(GOOD_YAML)
    assert load_file(path).ref == "demo@1.0.0"
    path.write_text("bundle: x\n")
    with pytest.raises(BundleInvalid) as info:
        load_file(path)
    assert info.value.source == str(path)
    with pytest.raises(BundleError, match="cannot read bundle file"):
        load_file(tmp_path / "missing.yaml")
    path.write_bytes(b"#" * (MAX_BUNDLE_BYTES + 10))
    with pytest.raises(BundleInvalid, match="larger than"):
        load_file(path)


@pytest.mark.parametrize("version", ["1.2.0", "1.3.0"])
def test_examples_validate(version: str) -> None:
    spec = load_file(EXAMPLES / "warehouse-monitor" / f"{version}.yaml")
    assert spec.ref == f"warehouse-monitor@{version}"
    assert [c.name for c in spec.containers] == ["temp-sensor", "relay-controller"]
    for c in spec.containers:
        assert c.healthcheck is not None
        assert c.resources.memory is not None


def test_examples_differ_only_where_intended() -> None:
    old = load_file(EXAMPLES / "warehouse-monitor" / "1.2.0.yaml")
    new = load_file(EXAMPLES / "warehouse-monitor" / "1.3.0.yaml")
    assert bundles.content_hash(old) != bundles.content_hash(new)
    # relay-controller is unchanged, so an update must not recreate it.
    assert bundles.container_hash(old.containers[1]) == bundles.container_hash(new.containers[1])
    assert bundles.container_hash(old.containers[0]) != bundles.container_hash(new.containers[0])
