"""OCI image references, parsed by the grammar of distribution/reference (used by Docker and Podman).

Parsing here rather than at pull time means a typo is refused when the bundle is pushed, not
discovered later on a device with a flaky link.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?"
)
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class ImageRef:
    domain: str | None  # None: the engine's default registry
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def pinned(self) -> bool:
        """True when the reference names a fixed image: a digest, or a tag other than latest."""
        return self.digest is not None or (self.tag is not None and self.tag != "latest")


def parse_image_ref(ref: str) -> ImageRef:
    """Split ``[domain/]path[:tag][@digest]``; ``ValueError`` says what is wrong."""
    if not ref:
        raise ValueError("must not be empty")
    if ref != ref.strip() or any(c.isspace() for c in ref):
        raise ValueError("must not contain whitespace")
    rest, _, digest = ref.partition("@")
    if "@" in ref:
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"digest {digest!r} is not a valid digest (e.g. sha256:<64 hex>)")
        if digest.startswith("sha256:") and not _SHA256.fullmatch(digest):
            raise ValueError("a sha256 digest is 64 lower-case hex digits")
    tag: str | None = None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ValueError(
                f"tag {tag!r} is not valid (letters, digits, '_', '.', '-'; at most 128)"
            )
    if not rest:
        raise ValueError("has no repository name")
    if len(rest) > MAX_NAME_LENGTH:
        raise ValueError(f"repository name is longer than {MAX_NAME_LENGTH} characters")
    domain: str | None = None
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        if not _DOMAIN.fullmatch(first):
            raise ValueError(f"registry {first!r} is not a valid host[:port]")
        domain, rest = first, remainder
    for component in rest.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            raise ValueError(
                f"repository path component {component!r} is not valid "
                "(lower-case letters and digits, separated by '.', '_', '__' or '-')"
            )
    return ImageRef(domain, rest, tag, digest or None)
