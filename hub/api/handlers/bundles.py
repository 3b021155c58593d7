"""Bundle handlers: push, sign, the list and versions, and the trust document."""

from __future__ import annotations

from typing import Any

from bundles.hashing import content_hash
from bundles.validate import from_dict
from bundles.variables import references
from hub.api.handlers.core import Caller, Change, Outcome
from hub.store import Store


# --- bundles -----------------------------------------------------------------------------
def bundles_push(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    spec = from_dict(body["spec"])  # raises BundleInvalid with every problem
    digest = content_hash(spec)
    signatures = body.get("signatures") or []
    with store.tx():
        created = store.put_bundle_version(
            spec.bundle, spec.version, spec.to_dict(), digest, spec.description
        )
        signed = [store.put_bundle_signature(spec.bundle, spec.version, s) for s in signatures]
    result = {
        "bundle": spec.bundle,
        "version": spec.version,
        "content_hash": digest,
        "created": created,
        "signatures": len(store.bundle_signatures(spec.bundle, spec.version)),
    }
    unset = _unset_references(store, spec.to_dict())
    if unset:
        result["unset"] = unset
    changes = [Change("bundles", "pushed", dict(result))] if created else []
    if any(signed) and not created:
        # A new signature of a version devices may already be told to run: their documents
        # change (the signing change republishes every document that differs).
        changes.append(Change("signing", "signed", {"bundle": spec.ref}))
    return Outcome(result, changes)


def _unset_references(store: Store, spec: dict[str, Any]) -> list[str]:
    """The spec's references that no fleet, group or device sets yet (a warning: values may
    be set after the push, but a device without one refuses the version, naming it)."""
    if not references(spec):
        return []
    known = {(k, n) for k, n in store.conn.execute("SELECT DISTINCT kind, name FROM variables")}
    out = []
    for i, c in enumerate(spec.get("containers") or ()):
        for key, value in sorted((c.get("env") or {}).items()):
            refs = references({"containers": [{"env": {key: value}}]})
            for kind, names in (("var", refs.variables), ("secret", refs.secrets)):
                out += [
                    f"containers[{i}].env.{key}: {'variable' if kind == 'var' else 'secret'} "
                    f"{n} is set for no fleet, group or device yet"
                    for n in sorted(names)
                    if (kind, n) not in known
                ]
    return out


def bundles_sign(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    """Add a signature to a stored version: how a key rotation re-signs what devices run."""
    name, version = body["name"], body["version"]
    added = store.put_bundle_signature(name, version, body["signature"])
    result = {
        "bundle": name,
        "version": version,
        "added": added,
        "signatures": len(store.bundle_signatures(name, version)),
    }
    changes = [Change("signing", "signed", {"bundle": f"{name}@{version}"})] if added else []
    return Outcome(result, changes)


def trust_get(store: Store, _body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"trust": store.trust_set(), "chain": store.trust_chain()})


def trust_push(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    doc = store.put_trust_set(body["trust"], force=bool(body.get("force")))
    return Outcome({"trust": doc}, [Change("signing", "trust", {"serial": doc["serial"]})])


def bundles_list(store: Store, _body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"items": store.list_bundles()})


def bundles_get(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome(store.get_bundle_version(body["name"], body.get("version")))


def bundles_versions(store: Store, body: dict[str, Any], _: Caller) -> Outcome:
    return Outcome({"name": body["name"], "items": store.bundle_versions(body["name"])})
