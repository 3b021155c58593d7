"""The desired-state document: what the hub (or a field tech, locally) wants a device to run.

The hub writes one per device to the JetStream KV bucket ``desired``; the agent stores every
revision it receives before acting on it. ``spec is None`` means "run no bundle". Decoded
through the shared gate (``protocol.codec.load``); a bad one raises ``DesiredDecodeError``, a
``MessageError``.

``signatures`` (the bundle's signature blocks, made by the operator's key) and ``trust`` (the
fleet's signed trust-set chain) are relayed by the hub, never made by it; the agent checks
them against the keys it trusts (``bundles.signing``, ``agent.sync.intake``,
docs/security.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from protocol import SCHEMA_VERSION
from protocol.codec import load
from protocol.errors import DesiredDecodeError
from protocol.metered import BudgetError, check_budget

__all__ = ["MAX_DESIRED_BYTES", "DesiredDecodeError", "DesiredSource", "DesiredState"]

DesiredSource = Literal["hub", "local"]


# The hub's nats-server refuses a larger message, so no desired document can be larger.
MAX_DESIRED_BYTES = 2 * 1024 * 1024
MAX_LIST = 256  # signatures or trust sets in one document (bundles.signing's limits are lower)


@dataclass(frozen=True)
class DesiredState:
    generation: int
    spec: dict[str, Any] | None  # BundleSpec.to_dict(); validated again by the agent
    source: DesiredSource = "hub"
    rollout_id: str | None = None
    content_hash: str | None = None
    # Maintenance windows set for the device or its group at the hub (bundles.windows
    # grammar); None: none set there, the bundle's ``update.maintenance_windows`` apply.
    maintenance_windows: tuple[str, ...] | None = None
    # An operator's override: start this revision through update locks and windows.
    force: bool = False
    # Signed bundles: the operator's signatures of ``spec`` and the fleet's trust chain.
    signatures: tuple[dict[str, Any], ...] = ()
    trust: tuple[dict[str, Any], ...] = ()
    # Per-device values for the spec's ``${NAME}`` references (bundles.variables), resolved
    # by the hub; the spec itself (what a signature covers) stays the same for every device.
    variables: dict[str, str] | None = None
    # The spec's ``${secret:NAME}`` values: ``{"fingerprints": {NAME: FP}, "sealed": B64}``,
    # sealed to this device's key (sbutil.seal): never in clear here.
    secrets: dict[str, Any] | None = None
    # Metered link: the data budget set at the hub for the device or its group, in bytes
    # per day (protocol.metered); None: none set there, the agent config's applies.
    metered: int | None = None

    def to_json(self) -> bytes:
        doc: dict[str, object] = {
            "v": SCHEMA_VERSION,
            "generation": self.generation,
            "spec": self.spec,
            "source": self.source,
            "rollout_id": self.rollout_id,
            "content_hash": self.content_hash,
        }
        # Written only when set, so every document without them keeps the bytes (and the
        # hash the hub compares to decide "changed") it had before these fields existed.
        if self.maintenance_windows is not None:
            doc["maintenance_windows"] = list(self.maintenance_windows)
        if self.force:
            doc["force"] = True
        if self.signatures:
            doc["signatures"] = list(self.signatures)
        if self.trust:
            doc["trust"] = list(self.trust)
        if self.variables:
            doc["variables"] = dict(self.variables)
        if self.secrets:
            doc["secrets"] = dict(self.secrets)
        if self.metered is not None:
            doc["metered"] = {"budget": self.metered}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> DesiredState:
        doc = load(raw, MAX_DESIRED_BYTES, error=DesiredDecodeError)
        gen = doc.get("generation")
        if not isinstance(gen, int) or isinstance(gen, bool) or gen < 0:
            raise DesiredDecodeError("generation", "must be a non-negative integer")
        spec = doc.get("spec")
        if spec is not None and not isinstance(spec, dict):
            raise DesiredDecodeError("spec", "must be an object or null")
        source = doc.get("source", "hub")
        if source not in ("hub", "local"):
            raise DesiredDecodeError("source", "must be 'hub' or 'local'")
        rollout_id = doc.get("rollout_id")
        if rollout_id is not None and not isinstance(rollout_id, str):
            raise DesiredDecodeError("rollout_id", "must be a string or null")
        content_hash = doc.get("content_hash")
        if content_hash is not None and not isinstance(content_hash, str):
            raise DesiredDecodeError("content_hash", "must be a string or null")
        windows = doc.get("maintenance_windows")
        if windows is not None and (
            not isinstance(windows, list) or not all(isinstance(w, str) for w in windows)
        ):
            raise DesiredDecodeError("maintenance_windows", "must be a list of strings or null")
        force = doc.get("force", False)
        if not isinstance(force, bool):
            raise DesiredDecodeError("force", "must be true or false")
        lists = []
        for name in ("signatures", "trust"):
            value = doc.get(name) or []
            if not isinstance(value, list) or len(value) > MAX_LIST:
                raise DesiredDecodeError(name, f"must be a list of at most {MAX_LIST} objects")
            if not all(isinstance(x, dict) for x in value):
                raise DesiredDecodeError(name, "every entry must be an object")
            lists.append(tuple(value))
        variables = doc.get("variables")
        if variables is not None and (
            not isinstance(variables, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in variables.items())
        ):
            raise DesiredDecodeError("variables", "must be an object of strings or null")
        secrets = doc.get("secrets")
        if secrets is not None:
            fps = secrets.get("fingerprints") if isinstance(secrets, dict) else None
            if (
                not isinstance(fps, dict)
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in fps.items())
                or not isinstance(secrets.get("sealed", ""), str)
            ):
                raise DesiredDecodeError(
                    "secrets", "must be {fingerprints: {NAME: FP}, sealed: base64} or null"
                )
        metered = doc.get("metered")
        budget: int | None = None
        if metered is not None:
            if not isinstance(metered, dict):
                raise DesiredDecodeError("metered", 'must be an object like {"budget": 100000}')
            try:
                budget = check_budget(metered.get("budget"))
            except BudgetError as exc:
                raise DesiredDecodeError("metered.budget", exc.message) from None
        return cls(
            gen,
            spec,
            source,
            rollout_id,
            content_hash,
            None if windows is None else tuple(windows),
            force,
            lists[0],
            lists[1],
            variables or None,
            secrets or None,
            budget,
        )
