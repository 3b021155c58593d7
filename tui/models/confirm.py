"""Pure view logic for what the operator is about to do: confirmation texts (with the
dry run's device count), the rollout request a form builds, which rollout actions a state
allows, and which actions read-only mode hides.

No Textual and no I/O here, so every rule is unit-tested directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tui.models import common as model
from tui.models import rollout_fields as fields

# --- confirmations -------------------------------------------------------------------------
SAMPLE_SHOWN = 3


def impact(dry: Mapping[str, Any] | None) -> str:
    """``12 devices (pi-01, pi-02, pi-03, …)`` from a ``dry_run`` reply; None = unknown."""
    if dry is None or not isinstance(dry.get("devices"), int):
        return "the hub could not count the devices in advance"
    n = int(dry["devices"])
    sample = [str(s) for s in dry.get("sample") or []][:SAMPLE_SHOWN]
    text = f"{n}{'+' if dry.get('more') else ''} device" + ("" if n == 1 else "s")
    if sample:
        text += " (" + ", ".join(sample) + (", …" if n > len(sample) else "") + ")"
    return text


def assign_question(bundle: str, target: str, dry: Mapping[str, Any] | None) -> str:
    kind, _, name = target.partition(":")
    return f"Assign {bundle} to {kind} {name} — {impact(dry)}?"


def rollout_question(
    bundle: str, target: str, phases: str | None, bake: str | None,
    max_failures: int | str | None, dry: Mapping[str, Any] | None,
) -> str:  # fmt: skip
    kind, _, name = target.partition(":")
    how = f"phases {phases}" if phases else "one phase"
    if bake:
        how += f", bake {bake}"
    limit = max_failures or 0
    tolerated = (
        f"{limit} of the devices failing" if isinstance(limit, str) else f"{limit} failure(s)"
    )
    return (
        f"Start a rollout of {bundle} to {kind} {name} — {impact(dry)}; {how}, "
        f"{tolerated} tolerated?"
    )


def target_problem(target: str) -> str | None:
    """Why a typed target cannot be right, before asking the hub (which checks it again)."""
    kind, sep, name = target.partition(":")
    if not sep or kind not in ("device", "group", "tag") or not name:
        return f"target must be device:ID, group:NAME or tag:NAME, got {target!r}"
    return None


def rollout_request(
    bundle: str | None, target: str, phases: str, bake: str, max_failures: str
) -> tuple[str, str, str | None, str | None, int | str | None]:
    """The rollout form's fields checked and parsed with the CLI's own parsers
    (``tui.models.rollout_fields``); a blank field is left to the hub's default (one phase, no
    bake, no failure tolerated). ``FieldError`` names the field that is wrong."""
    if not bundle:
        raise fields.FieldError("bundle@version", "pick a bundle@version first")
    target = target.strip()
    problem = target_problem(target)
    if problem is not None:
        raise fields.FieldError("target", problem)
    return (
        bundle,
        target,
        fields.steps(phases) if phases.strip() else None,
        fields.bake(bake) if bake.strip() else None,
        fields.share(max_failures) if max_failures.strip() else None,
    )


def rollout_action_question(action: str, rollout: Mapping[str, Any]) -> str:
    counts = model.rollout_counts(rollout)
    total = sum(counts.values())
    ref = f"{rollout.get('bundle')}@{rollout.get('version')}"
    what = {
        "abort": "stops it for good and gives every device back its previous assignment",
        "pause": "starts no new phases; devices already updating go on",
        "resume": "starts the next phases again",
    }.get(action, "")
    return (
        f"{action.capitalize()} rollout {rollout.get('id')} ({ref}, {total} device"
        f"{'' if total == 1 else 's'}: {counts['Pending']} pending, {counts['Updating']} "
        f"updating)? It {what}."
    )


def rollout_allows(state: str, action: str) -> bool:
    """Which of pause/resume/abort make sense in a rollout state (the hub checks again)."""
    return {
        "pause": state == "running",
        "resume": state == "paused",
        "abort": state in ("running", "paused"),
    }.get(action, False)


# --- read-only -----------------------------------------------------------------------------
WRITE_ACTIONS = frozenset(
    {
        "assign", "unassign", "push", "rollout_start", "rollout_pause", "rollout_resume",
        "rollout_abort", "restart", "decommission", "reconcile", "start_rollout",
        "rollout_control", "fleet_write", "force_update",
    }
)  # fmt: skip


def write_allowed(action: str, read_only: bool) -> bool | None:
    """``check_action``'s answer: True, or False (hidden) for a write in read-only mode."""
    return not (read_only and action in WRITE_ACTIONS)
