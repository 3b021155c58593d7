"""Resolve an image tag to its manifest digest with the registry's HTTP API v2, for signing.

``HEAD /v2/<name>/manifests/<tag>`` with every manifest media type in ``Accept``: the
registry answers with the digest of what it would serve (for a multi-architecture image,
the index, so every device's engine resolves the same digest to its own platform) in
``Docker-Content-Digest``. Anonymous bearer tokens (Docker Hub, ghcr.io) are fetched when
the registry asks for one. Loopback registries and ``--insecure-registry`` hosts are
spoken to over plain HTTP, as Docker and Podman do for loopback.
"""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection

from bundles.image import parse_image_ref
from tui.errors import TuiError

ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
DOCKER_HUB = "registry-1.docker.io"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(TuiError):
    """The registry could not be asked, or did not name a digest (exit 1: like a hub that
    cannot be reached, nothing was pushed)."""


def _loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0].strip("[]") if host.count(":") <= 1 or "]" in host else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _endpoint(image: str, insecure: Collection[str]) -> tuple[str, str, str]:
    """(base URL, repository path, tag) of an image reference."""
    ref = parse_image_ref(image)
    if ref.tag is None:
        raise RegistryError(f"{image}: no tag to resolve")
    domain = ref.domain or DOCKER_HUB
    path = ref.path
    if domain in ("docker.io", "index.docker.io"):
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    scheme = "http" if _loopback(domain) or domain in insecure else "https"
    return f"{scheme}://{domain}", path, ref.tag


def _token(challenge: str, timeout: float) -> str | None:
    scheme, _, params = challenge.partition(" ")
    if scheme.lower() != "bearer":
        return None
    fields = dict(_CHALLENGE.findall(params))
    realm = fields.pop("realm", None)
    if not realm:
        return None
    url = realm + "?" + urllib.parse.urlencode(fields)
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        doc = json.loads(resp.read())
    tok = doc.get("token") or doc.get("access_token")
    return str(tok) if tok else None


def resolve_digest(image: str, *, insecure: Collection[str] = (), timeout: float = 30.0) -> str:
    """The ``sha256:...`` digest the registry serves for ``image``'s tag now."""
    base, path, tag = _endpoint(image, insecure)
    url = f"{base}/v2/{path}/manifests/{urllib.parse.quote(tag)}"
    headers = {"Accept": ACCEPT}
    for attempt in range(2):
        req = urllib.request.Request(url, method="HEAD", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                digest = resp.headers.get("Docker-Content-Digest", "")
                break
        except urllib.error.HTTPError as exc:
            challenge = exc.headers.get("WWW-Authenticate", "") if exc.headers else ""
            if exc.code == 401 and attempt == 0 and challenge:
                try:
                    token = _token(challenge, timeout)
                except (OSError, ValueError) as tok_exc:
                    raise RegistryError(f"{image}: registry token: {tok_exc}") from None
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                    continue
            if exc.code == 404:
                raise RegistryError(f"{image}: the registry has no such tag") from None
            raise RegistryError(f"{image}: registry answered {exc.code} {exc.reason}") from None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{image}: cannot reach the registry at {base}: {exc}") from None
    else:  # pragma: no cover - the loop always breaks or raises
        raise RegistryError(f"{image}: the registry refused the token")
    if not _DIGEST.fullmatch(digest):
        raise RegistryError(f"{image}: the registry named no sha256 digest ({digest!r})")
    return digest
