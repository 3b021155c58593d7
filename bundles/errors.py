"""The bundles package's one exception tree.

``BundleInvalid`` carries every problem found in a document at once, so an operator fixes a
bundle in one edit cycle instead of one error per push.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    path: str  # e.g. "containers[1].ports[0].container"; "$" is the whole document
    message: str
    line: int | None = None  # 1-based line in the YAML/JSON source, when known

    def __str__(self) -> str:
        suffix = f" (line {self.line})" if self.line is not None else ""
        return f"{self.path}: {self.message}{suffix}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "message": self.message, "line": self.line}


class BundleError(Exception):
    """Root of every error the bundles package raises."""


class BundleInvalid(BundleError):
    """A bundle document (or a bundle reference) failed validation."""

    def __init__(self, errors: Iterable[FieldError], source: str = "<bundle>") -> None:
        self.errors: list[FieldError] = list(errors)
        self.source = source
        super().__init__("\n".join(str(e) for e in self.errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class VersionConflict(BundleError):
    """A bundle version was pushed again with different content; versions are immutable."""

    def __init__(self, ref: str, existing_hash: str, new_hash: str) -> None:
        self.ref = ref
        self.existing_hash = existing_hash
        self.new_hash = new_hash
        super().__init__(
            f"{ref} already exists with different content ({existing_hash}, pushed {new_hash}); "
            "versions are immutable: publish a new version instead"
        )
