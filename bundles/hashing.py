"""The canonical content hash: one byte string per meaning, whatever the source formatting.

Hashing ``BundleSpec.to_dict()`` (not the source text) makes key order, YAML style, comments
and omitted-versus-explicit defaults irrelevant: they all validate to the same model.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bundles.model import BundleSpec, ContainerSpec

CONTAINER_HASH_HEX = 16  # 64 bits: ample to tell one container's revisions apart


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8; NaN and infinities are refused."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def content_hash(spec: BundleSpec) -> str:
    """``"sha256:<hex>"`` of the whole bundle; equal hashes mean equal bundles."""
    return "sha256:" + hashlib.sha256(canonical_json(spec.to_dict())).hexdigest()


def container_hash(container: ContainerSpec) -> str:
    """Short hash of one container's spec; the agent's ``io.signalbeam.spec-hash`` label.

    It covers only the container, not the bundle version, so a new bundle version that leaves
    a container unchanged does not recreate it. ``depends_on`` is left out too: it orders
    starts and changes nothing inside the container, so editing it must not recreate one.
    """
    body = container.to_dict()
    body.pop("depends_on", None)
    digest = hashlib.sha256(canonical_json(body)).hexdigest()
    return digest[:CONTAINER_HASH_HEX]
