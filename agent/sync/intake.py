"""The agent's desired intake: the one point where a hub revision is accepted or refused.

Every revision the downlink reads passes ``Intake.admit`` before it is stored. The decision
is ``admit`` below, a pure function of the revision, the trust set the device holds and its
config; it does not depend on the hub (which only relays signatures and trust sets it cannot
make) nor on how the reconcile loop works.

A refused revision is recorded as a *failed deployment* of that revision (reason
``refused: ...``), with a ``desired.refused`` event and a failed journal run, before the
revision itself is stored: the hub then sees the device acknowledge the revision and fail it
with the reason (device show, rollout status), and the reconcile loop treats it as any
failed revision, so the device keeps running the deployment it last had healthy, without
pulling or starting anything of the refused bundle.

The trust set the device holds lives in ``<data_dir>/trust.json``: first the one the hub
handed out at enrollment (saved with the credentials), then each newer set a desired
document carries that a key trusted at that moment signed (``bundles.signing.advance``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent import secretbox
from agent.precedence import Revision, revision_of
from bundles.signing import SigningError, TrustSet, advance_chain, parse_trust_set, verify_bundle
from protocol.desired import DesiredState
from sbutil.seal import SealKey

log = logging.getLogger(__name__)

TRUST_FILE = "trust.json"
NO_TRUST = TrustSet(0, False, ())  # an agent enrolled by a hub from before signed bundles


@dataclass(frozen=True)
class Admission:
    ok: bool
    trust: TrustSet  # the trust set after this revision's chain
    reason: str | None = None
    key_id: str | None = None
    problems: tuple[str, ...] = ()  # trust sets in the chain that were refused


def admit(
    desired: DesiredState,
    trust: TrustSet,
    pinned: tuple[str, ...] = (),
    require: bool | None = None,
) -> Admission:
    """Whether the device may run ``desired``. Pure: the trust chain it carries is walked
    first (a rotation's new key signs the bundle of the same document), then its bundle is
    checked against the resulting set, the config's pinned keys and ``require``."""
    state, problems = advance_chain(trust, desired.trust, pinned)
    verdict = verify_bundle(desired.spec, desired.signatures, state, pinned, require)
    return Admission(verdict.ok, state, verdict.reason, verdict.key_id, tuple(problems))


class RefusalStore(Protocol):
    def event(
        self,
        kind: str,
        message: str,
        *,
        severity: Any = "info",
        data: dict[str, Any] | None = None,
    ) -> int: ...

    def deployment(self, revision: Revision) -> Any: ...

    def deployment_begin(
        self, revision: Revision, bundle_ref: str | None, spec: dict[str, Any] | None
    ) -> None: ...

    def deployment_set(self, revision: Revision, status: Any, reason: str | None) -> None: ...

    def journal_begin(self, generation: int, trigger: str, plan: list[dict[str, Any]]) -> int: ...

    def journal_end(self, run_id: int, result: Any, reason: str | None) -> None: ...


def initial_trust(path: Path, enrolled: dict[str, Any] | None) -> TrustSet:
    """The saved trust set, or the enrollment's when that is newer (a re-enrollment), or
    ``NO_TRUST``. An unreadable saved set falls back to the enrollment's, loudly."""
    saved: TrustSet | None = None
    try:
        saved = parse_trust_set(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, SigningError) as exc:
        log.error("trust set %s is unreadable (%s); using the enrollment's", path, exc)
    first: TrustSet | None = None
    if enrolled is not None:
        try:
            first = parse_trust_set(enrolled)
        except SigningError as exc:
            log.error("the enrollment's trust set is invalid (%s)", exc)
    if saved is not None and (first is None or saved.serial >= first.serial):
        return saved
    return first or NO_TRUST


def save_trust(path: Path, trust: TrustSet) -> None:
    """Atomically (temp file, fsync, rename): a torn file would lose the chain's position."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(trust.to_dict(), sort_keys=True, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _ref(spec: dict[str, Any] | None) -> str | None:
    return None if not spec else f"{spec.get('bundle')}@{spec.get('version')}"


class Intake:
    """Holds the device's trust set; ``check`` is called with each hub revision before it is
    stored (from a worker thread: it writes files and the store)."""

    def __init__(
        self,
        store: RefusalStore,
        path: Path,
        *,
        enrolled: dict[str, Any] | None = None,
        pinned: tuple[str, ...] = (),
        require: bool | None = None,
        device_id: str = "",
        seal_key: Callable[[], SealKey | None] | None = None,
    ) -> None:
        self.store = store
        self.seal_key = seal_key
        self.path = path
        self.pinned = pinned
        self.require = require
        self.trust = initial_trust(path, enrolled)
        self.refused = 0
        self._problems: set[str] = set()
        self._extra = {"device": device_id}

    def status(self) -> dict[str, Any]:
        return {
            "trust_serial": self.trust.serial,
            "require_signed": self.trust.require if self.require is None else self.require,
            "trusted_keys": sorted(
                {*self.trust.key_ids, *(TrustSet(0, False, self.pinned).key_ids)}
            ),
            "refused": self.refused,
        }

    def check(self, desired: DesiredState) -> bool:
        """True: store and run it. False: refused and recorded (then still stored, so the
        device acknowledges the revision; its failed deployment keeps it from running)."""
        a = admit(desired, self.trust, self.pinned, self.require)
        for problem in a.problems:
            if problem in self._problems:
                continue  # every document carries the chain: say it once per agent run
            self._problems.add(problem)
            log.error("trust set refused: %s", problem, extra=self._extra)
            self.store.event(
                "trust.refused",
                f"a trust set relayed by the hub was refused: {problem}",
                severity="error",
                data={"generation": desired.generation, "reason": problem},
            )
        if a.trust != self.trust:
            old = self.trust
            save_trust(self.path, a.trust)
            self.trust = a.trust
            self.store.event(
                "trust.changed",
                f"trusted bundle-signing keys: serial {old.serial} -> {a.trust.serial}"
                f" ({len(a.trust.keys)} key(s), unsigned bundles "
                f"{'refused' if a.trust.require else 'allowed'})",
                data={"serial": a.trust.serial, "keys": sorted(a.trust.key_ids),
                      "require": a.trust.require},
            )  # fmt: skip
        if a.ok:
            # After the signature check: the values are per device and not signed, and they
            # only fill the signed spec's references (bundles.variables, docs/security.md).
            why = secretbox.problem(desired, self.seal_key() if self.seal_key else None)
            if why is None:
                return True
            a = Admission(False, a.trust, f"per-device values: {why}")
        self._refuse(desired, a.reason or "refused")
        return False

    def _refuse(self, desired: DesiredState, reason: str) -> None:
        self.refused += 1
        rev = revision_of(desired)
        ref = _ref(desired.spec)
        why = f"refused: {reason}"
        log.error(
            "desired generation %d (%s) %s; keeping what runs",
            desired.generation, ref, why, extra=self._extra,
        )  # fmt: skip
        if self.store.deployment(rev) is not None:
            return  # recorded before a crash; the revision itself was not stored yet
        # The failed deployment first: once the revision is stored the reconcile loop may
        # read it at any moment, and it must find the revision already failed.
        self.store.deployment_begin(rev, ref, desired.spec)
        self.store.deployment_set(rev, "failed", why)
        run = self.store.journal_begin(desired.generation, "desired", [])
        self.store.journal_end(run, "failed", why)
        self.store.event(
            "desired.refused",
            f"desired generation {desired.generation} ({ref or 'no bundle'}) {why};"
            " the device keeps running what it had",
            severity="error",
            data={"generation": desired.generation, "bundle": ref, "reason": reason},
        )
