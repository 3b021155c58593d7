"""The app bundle spec: data model, validation, versions and a canonical content hash."""

from bundles.errors import BundleError, BundleInvalid, FieldError, VersionConflict
from bundles.hashing import canonical_json, container_hash, content_hash
from bundles.model import BundleSpec, ContainerSpec
from bundles.validate import MAX_BUNDLE_BYTES, from_dict, load_file, parse_bundle
from bundles.versions import Version, check_immutable, parse_ref, parse_version

__all__ = [
    "MAX_BUNDLE_BYTES",
    "BundleError",
    "BundleInvalid",
    "BundleSpec",
    "ContainerSpec",
    "FieldError",
    "Version",
    "VersionConflict",
    "canonical_json",
    "check_immutable",
    "container_hash",
    "content_hash",
    "from_dict",
    "load_file",
    "parse_bundle",
    "parse_ref",
    "parse_version",
]
