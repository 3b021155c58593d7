"""Semantic versions (semver 2.0.0), bundle references and the immutable-version rule."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bundles.errors import BundleInvalid, FieldError, VersionConflict

# The regular expression published with semver 2.0.0 (semver.org, FAQ).
SEMVER_RE = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
BUNDLE_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
MAX_VERSION_LENGTH = 128

_Ident = tuple[int, int | str]


@dataclass(frozen=True, eq=True)
class Version:
    """A parsed semver.

    ``==`` compares every part, build metadata included (``1.0.0+a`` and ``1.0.0+b`` are
    different bundle versions); ``<`` and friends follow semver precedence, which ignores build
    metadata and ranks a pre-release below its release.
    """

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    def precedence_key(self) -> tuple[int, int, int, int, tuple[_Ident, ...]]:
        # Numeric identifiers rank below alphanumeric ones; a release ranks above its
        # pre-releases; a longer pre-release wins when all shared identifiers are equal.
        idents: tuple[_Ident, ...] = tuple(
            (0, int(p)) if p.isdigit() else (1, p) for p in self.prerelease
        )
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, idents)

    def __lt__(self, other: Version) -> bool:
        return self.precedence_key() < other.precedence_key()

    def __le__(self, other: Version) -> bool:
        return self.precedence_key() <= other.precedence_key()

    def __gt__(self, other: Version) -> bool:
        return self.precedence_key() > other.precedence_key()

    def __ge__(self, other: Version) -> bool:
        return self.precedence_key() >= other.precedence_key()


def version_error(text: object) -> str | None:
    """The reason ``text`` is not a valid semver, or None when it is."""
    if not isinstance(text, str):
        return 'must be a string (quote it in YAML, e.g. "1.2.0")'
    if len(text) > MAX_VERSION_LENGTH:
        return f"must be at most {MAX_VERSION_LENGTH} characters"
    if not SEMVER_RE.fullmatch(text):
        return "must be a semantic version MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], e.g. 1.2.0"
    return None


def parse_version(text: str, *, field: str = "version") -> Version:
    reason = version_error(text)
    if reason is not None:
        raise BundleInvalid([FieldError(field, reason)])
    m = SEMVER_RE.fullmatch(text)
    assert m is not None  # checked by version_error
    pre, build = m.group(4), m.group(5)
    return Version(
        int(m.group(1)),
        int(m.group(2)),
        int(m.group(3)),
        tuple(pre.split(".")) if pre else (),
        tuple(build.split(".")) if build else (),
    )


def bundle_name_error(text: object) -> str | None:
    if not isinstance(text, str):
        return "must be a string"
    if not BUNDLE_NAME_RE.fullmatch(text):
        return (
            "must be a DNS label: 1-63 lower-case letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return None


def parse_ref(ref: str, *, field: str = "ref") -> tuple[str, str]:
    """``"warehouse-monitor@1.2.0"`` -> ``("warehouse-monitor", "1.2.0")``."""
    if not isinstance(ref, str) or "@" not in ref:
        raise BundleInvalid(
            [FieldError(field, "must be NAME@VERSION, e.g. warehouse-monitor@1.2.0")]
        )
    name, _, version = ref.partition("@")
    errors = []
    if (reason := bundle_name_error(name)) is not None:
        errors.append(FieldError(field, f"bundle name {name!r} {reason}"))
    if (reason := version_error(version)) is not None:
        errors.append(FieldError(field, f"version {version!r} {reason}"))
    if errors:
        raise BundleInvalid(errors)
    return name, version


def check_immutable(existing_hash: str | None, new_hash: str, ref: str) -> bool:
    """True: a new version to store. False: the same content again, a no-op.

    Raises ``VersionConflict`` when the version exists with different content.
    """
    if existing_hash is None:
        return True
    if existing_hash == new_hash:
        return False
    raise VersionConflict(ref, existing_hash, new_hash)
