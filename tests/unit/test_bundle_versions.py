"""Semantic versions, bundle references and the immutable-version rule."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundles import BundleInvalid, VersionConflict, check_immutable, parse_ref, parse_version
from bundles.versions import Version


def test_parse_version_parts() -> None:
    v = parse_version("1.2.3-rc.1+build.5")
    assert v == Version(1, 2, 3, ("rc", "1"), ("build", "5"))
    assert str(v) == "1.2.3-rc.1+build.5"


@pytest.mark.parametrize(
    "text",
    ["1.2", "1.2.3.4", "01.2.3", "1.02.3", "1.2.3-", "1.2.3-01", "1.2.3+", "v1.2.3", " 1.2.3", ""],
)
def test_invalid_versions(text: str) -> None:
    with pytest.raises(BundleInvalid) as info:
        parse_version(text)
    assert info.value.errors[0].path == "version"
    assert "semantic version" in info.value.errors[0].message


def test_version_must_be_a_string() -> None:
    with pytest.raises(BundleInvalid, match="must be a string"):
        parse_version(1.2)  # type: ignore[arg-type]


def test_semver_spec_precedence_example() -> None:
    # The ordering example from semver.org, item 11.
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "2.0.0",
        "2.1.0",
        "2.1.1",
        "10.0.0",
    ]
    parsed = [parse_version(t) for t in ordered]
    assert sorted(reversed(parsed)) == parsed
    for a, b in itertools.pairwise(parsed):
        assert a < b and b > a and a <= b and b >= a


def test_build_metadata_ignored_in_precedence_but_not_in_equality() -> None:
    a, b = parse_version("1.0.0+a"), parse_version("1.0.0+b")
    assert not a < b and not b < a and a <= b and a >= b
    assert a != b


_ident = st.one_of(
    st.integers(0, 10**6).map(str), st.from_regex(r"[a-zA-Z-][0-9a-zA-Z-]{0,5}", fullmatch=True)
)
_version = st.builds(
    lambda ma, mi, pa, pre, build: (
        f"{ma}.{mi}.{pa}"
        + (("-" + ".".join(pre)) if pre else "")
        + (("+" + ".".join(build)) if build else "")
    ),
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.lists(_ident, max_size=3),
    st.lists(st.from_regex(r"[0-9a-zA-Z-]{1,5}", fullmatch=True), max_size=2),
)


@given(_version)
def test_version_text_round_trips(text: str) -> None:
    assert str(parse_version(text)) == text


@given(_version, _version, _version)
def test_precedence_is_a_total_preorder(a: str, b: str, c: str) -> None:
    va, vb, vc = parse_version(a), parse_version(b), parse_version(c)
    assert (va <= vb) or (vb <= va)
    if va <= vb and vb <= vc:
        assert va <= vc


def test_parse_ref() -> None:
    assert parse_ref("warehouse-monitor@1.2.0") == ("warehouse-monitor", "1.2.0")


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ("warehouse-monitor", "NAME@VERSION"),
        ("warehouse-monitor@", "version ''"),
        ("@1.2.0", "bundle name ''"),
        ("Warehouse@1.2.0", "DNS label"),
        ("wm@1.2", "semantic version"),
        ("wm@1.2.0@x", "semantic version"),
    ],
)
def test_parse_ref_errors(ref: str, fragment: str) -> None:
    with pytest.raises(BundleInvalid) as info:
        parse_ref(ref, field="bundle")
    assert all(e.path == "bundle" for e in info.value.errors)
    assert fragment in str(info.value)


def test_check_immutable() -> None:
    assert check_immutable(None, "sha256:a", "x@1.0.0") is True
    assert check_immutable("sha256:a", "sha256:a", "x@1.0.0") is False
    with pytest.raises(VersionConflict) as info:
        check_immutable("sha256:a", "sha256:b", "x@1.0.0")
    assert info.value.ref == "x@1.0.0"
    assert "immutable" in str(info.value)
