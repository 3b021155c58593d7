"""Rollouts: a bundle version to a set of devices, phase by phase
(docs/rollouts.md). ``machine`` is the pure state machine; ``install(hub)`` wires the API
verbs and the controller into the hub process."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.context import HubContext
    from hub.rollouts.controller import RolloutController


def install(hub: HubContext) -> RolloutController:
    # Imported here so importing hub.rollouts (e.g. for the pure machine) stays light.
    from hub.rollouts.controller import install as _install

    return _install(hub)
