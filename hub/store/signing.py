"""Bundle signatures and the fleet's trust-set chain, as the operator's CLI pushed them.

The hub only keeps and relays these: it holds no signing key and cannot make a signature or a
trust set an agent accepts (docs/security.md). It still checks what it is given, so an
operator hears about a wrong key or a broken chain at push time, not from every device.
"""

from __future__ import annotations

import json
from typing import Any

from bundles.signing import (
    SigningError,
    TrustSet,
    advance,
    parse_trust_set,
    verify_bundle,
)
from hub.errors import Conflict, Invalid, NotFound
from hub.store.base import StoreBase
from hub.timeutil import now_iso


class SigningStore(StoreBase):
    # The hub's ``require_signed_bundles`` setting (hub.toml), set when the hub starts: what
    # serial 0 says before the operator pushed any trust set. The hub sets it from hub.toml
    # at start; False here as in a hub.toml without the key (tests of other concerns).
    require_signed_default: bool = False

    def trust_chain(self) -> list[dict[str, Any]]:
        """Every signed trust set, oldest first (what desired documents carry)."""
        return [
            json.loads(r[0])
            for r in self.conn.execute("SELECT doc FROM trust_sets ORDER BY serial")
        ]

    # The newest trust set as last read or written on the store's thread; enrollment replies
    # on the event loop read this copy (one per hub process, replaced whole, never mutated).
    trust_cache: dict[str, Any] | None = None

    def trust_set(self) -> dict[str, Any]:
        """The newest trust set: what an enrolling device is handed. Before any was pushed,
        serial 0 with no keys and the hub's ``require_signed_bundles`` setting."""
        doc = self.scalar("SELECT doc FROM trust_sets ORDER BY serial DESC LIMIT 1")
        if doc is None:
            found = TrustSet(0, self.require_signed_default, ()).to_dict()
        else:
            found = json.loads(doc)
        self.trust_cache = found
        return found

    def unrunnable_under(self, trust: TrustSet) -> dict[str, str]:
        """Assigned versions no device would run under ``trust``: ``{NAME@VERSION: why}``.

        "Assigned" includes what an active (running or paused) rollout may still put on a
        device: its own version (before its first phase is written), and the device-level
        assignments its phases replaced, which its abort gives back (hub/rollouts): a
        rotation mid-rollout must not make the way back one the devices refuse."""
        out: dict[str, str] = {}
        seen: set[tuple[str, str]] = set()
        for a in self.rows(
            "SELECT bundle, version FROM assignments"
            " UNION SELECT bundle, version FROM rollouts WHERE status IN ('running', 'paused')"
            " UNION SELECT t.prev_bundle, t.prev_version FROM rollout_targets t"
            " JOIN rollouts r ON r.id = t.rollout_id"
            " WHERE r.status IN ('running', 'paused') AND t.prev_bundle IS NOT NULL"
            " ORDER BY 1, 2"
        ):
            key = (a["bundle"], a["version"])
            if key in seen:
                continue
            seen.add(key)
            spec = self.scalar(
                "SELECT spec FROM bundle_versions WHERE bundle = ? AND version = ?", key
            )
            if spec is None:
                continue
            verdict = verify_bundle(json.loads(spec), self.bundle_signatures(*key), trust)
            if not verdict.ok:
                out[f"{key[0]}@{key[1]}"] = str(verdict.reason)
        return out

    def check_runnable(self, bundle: str, version: str) -> None:
        """Refuse to assign or roll out a version every device would refuse under the newest
        trust set (unsigned where signatures are required, or signed by no trusted key): the
        operator hears it now, with what to do, instead of from each device after the push.
        An unknown version passes: the assignment's own check names it."""
        spec = self.scalar(
            "SELECT spec FROM bundle_versions WHERE bundle = ? AND version = ?",
            (bundle, version),
        )
        if spec is None:
            return
        trust = parse_trust_set(self.trust_set())
        verdict = verify_bundle(json.loads(spec), self.bundle_signatures(bundle, version), trust)
        if verdict.ok:
            return
        if trust.keys:
            fix = (
                f"sign it with a trusted key: `signalbeam bundle resign {bundle}@{version}"
                " --key KEY` (or `signalbeam bundle push --sign FILE`)"
            )
        else:
            fix = (
                "this fleet requires signed bundles and trusts no key yet: `signalbeam signing-key"
                " create KEY`, `signalbeam signing-key trust KEY`, then `signalbeam bundle resign"
                f" {bundle}@{version} --key KEY`; or opt out with `signalbeam signing-key require no`"
                " (docs/security.md)"
            )
        raise Conflict(
            f"devices would refuse {bundle}@{version}: {verdict.reason}"
            f" (trust set serial {trust.serial}); {fix}. --force sends it anyway.",
            field="bundle",
        )

    def put_trust_set(self, doc: Any, *, force: bool = False) -> dict[str, Any]:
        """Append a trust set: the next serial, signed by a key of the newest set (the first
        one may be signed by any key, as a device with no keys takes it on first use).

        A set under which an assigned version would no longer run (its only signatures are
        by a key it retires) is refused unless ``force``: every device assigned it would
        refuse its next document, which is the outage a rotation must avoid (re-sign first)."""
        try:
            new = parse_trust_set(doc)
        except SigningError as exc:
            raise Invalid(str(exc), field="trust") from None
        with self.tx() as c:
            current = parse_trust_set(self.trust_set())
            if new.serial != current.serial + 1:
                raise Conflict(
                    f"trust set serial must be {current.serial + 1} (the newest is"
                    f" {current.serial}); got {new.serial}",
                    field="serial",
                )
            try:
                advance(current, new.to_dict())
            except SigningError as exc:
                raise Invalid(str(exc), field="signature") from None
            # Only what this set newly breaks: a version devices refuse already is no news.
            before = {} if force else self.unrunnable_under(current)
            stranded = [
                f"{ref}: {why}"
                for ref, why in ({} if force else self.unrunnable_under(new)).items()
                if ref not in before
            ]
            if stranded:
                raise Conflict(
                    "devices would refuse what they are assigned under this trust set: "
                    + "; ".join(stranded[:10])
                    + " (re-sign with `signalbeam bundle resign NAME@VERSION --key NEW` first,"
                    " or push it anyway with --force)",
                    field="trust",
                    details=stranded,
                )
            c.execute(
                "INSERT INTO trust_sets (serial, doc, created_at) VALUES (?, ?, ?)",
                (new.serial, json.dumps(new.to_dict(), sort_keys=True), now_iso()),
            )
        self.trust_cache = new.to_dict()
        return new.to_dict()

    def bundle_signatures(self, bundle: str, version: str) -> list[dict[str, Any]]:
        return [
            json.loads(r[0])
            for r in self.conn.execute(
                "SELECT signature FROM bundle_signatures WHERE bundle = ? AND version = ?"
                " ORDER BY created_at, key_id",
                (bundle, version),
            )
        ]

    def put_bundle_signature(self, bundle: str, version: str, signature: Any) -> bool:
        """Keep a signature of a stored version (one per key; a new one replaces it). It must
        verify with a key of the newest trust set: a signature no device would accept is a
        mistake the operator should hear about now. False when it was already there."""
        if not isinstance(signature, dict) or not isinstance(signature.get("key_id"), str):
            raise Invalid("signature must be an object with key_id and sig", field="signature")
        with self.tx() as c:
            row = self.scalar(
                "SELECT spec FROM bundle_versions WHERE bundle = ? AND version = ?",
                (bundle, version),
            )
            if row is None:
                raise NotFound(f"no bundle version {bundle}@{version}", field="version")
            trust = parse_trust_set(self.trust_set())
            verdict = verify_bundle(json.loads(row), [signature], trust)
            if not verdict.ok:
                raise Invalid(
                    f"{bundle}@{version}: {verdict.reason} (the fleet's trust set has serial"
                    f" {trust.serial}; add the key with `signalbeam signing-key trust` first)",
                    field="signature",
                )
            text = json.dumps(signature, sort_keys=True)
            old = self.scalar(
                "SELECT signature FROM bundle_signatures WHERE bundle = ? AND version = ?"
                " AND key_id = ?",
                (bundle, version, signature["key_id"]),
            )
            if old == text:
                return False
            c.execute(
                "INSERT OR REPLACE INTO bundle_signatures (bundle, version, key_id, signature,"
                " created_at) VALUES (?, ?, ?, ?, ?)",
                (bundle, version, signature["key_id"], text, now_iso()),
            )
        return True
