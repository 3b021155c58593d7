"""OCI image reference parsing."""

from __future__ import annotations

import pytest

from bundles.image import ImageRef, parse_image_ref

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("nginx", ImageRef(None, "nginx", None, None)),
        ("nginx:1.25", ImageRef(None, "nginx", "1.25", None)),
        ("acme/app:v1", ImageRef(None, "acme/app", "v1", None)),
        ("localhost/app:1", ImageRef("localhost", "app", "1", None)),
        ("localhost:5000/app", ImageRef("localhost:5000", "app", None, None)),
        (
            "registry.example.com/acme/temp-sensor:1.2.0",
            ImageRef("registry.example.com", "acme/temp-sensor", "1.2.0", None),
        ),
        (f"ghcr.io/a/b@{DIGEST}", ImageRef("ghcr.io", "a/b", None, DIGEST)),
        (f"ghcr.io/a/b:1@{DIGEST}", ImageRef("ghcr.io", "a/b", "1", DIGEST)),
        ("[fe80::1]:5000/a:1", ImageRef("[fe80::1]:5000", "a", "1", None)),
    ],
)
def test_parse(ref: str, expected: ImageRef) -> None:
    assert parse_image_ref(ref) == expected
    assert parse_image_ref(ref).name.endswith(expected.path)


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ("", "empty"),
        ("a b:1", "whitespace"),
        ("Nginx:1", "path component"),
        ("acme//app:1", "path component"),
        ("acme/app-:1", "path component"),
        (":1", "no repository"),
        ("nginx:", "tag"),
        ("nginx:" + "a" * 129, "tag"),
        ("nginx@sha256:" + "A" * 64, "lower-case hex"),
        ("nginx@sha256:abc", "digest"),
        ("nginx@md5", "digest"),
        ("bad_host:5000/app:1", "registry"),
        ("a" * 256 + ":1", "longer than 255"),
    ],
)
def test_invalid(ref: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_image_ref(ref)


def test_pinned() -> None:
    assert parse_image_ref("a:1").pinned
    assert parse_image_ref(f"a@{DIGEST}").pinned
    assert parse_image_ref(f"a:latest@{DIGEST}").pinned
    assert not parse_image_ref("a:latest").pinned
    assert not parse_image_ref("a").pinned
