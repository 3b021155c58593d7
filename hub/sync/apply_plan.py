"""The hub's ingest rule, pure: which rows of a report batch to apply, exactly once and in order
per device (``plan_apply``), whatever the order, duplication and overtaking of batches.

It lives with the hub's sync rather than in ``protocol``: it is the receiver's policy over the
protocol's types (``ReportBatch``, its ``prev_seq``), which only the hub applies; the agent and
the TUI never need it. ``hub.sync.apply`` runs it inside the ingest transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.report import ReportBatch, ReportRow


@dataclass(frozen=True)
class ApplyPlan:
    """What the hub's ingest does with one report batch (see ``plan_apply``).

    ``wait``: an earlier batch has not been applied yet (this one overtook it): NAK with a short
    delay, apply nothing. ``too_far``: the batch's sequences jump beyond ``max_seq``, what the
    device can have numbered: apply nothing (the caller waits a while for evidence, then
    refuses it). Otherwise apply ``rows`` in order (those above ``last_applied``), in
    one transaction that also sets the device's last applied seq to ``last_applied``; ``gaps``
    are missing ``(first, last)`` ranges before them (announced by ``outbox.dropped`` events
    when the device dropped rows; otherwise a loss worth logging), ``replayed`` counts rows
    already applied (a resend) and skipped.
    """

    wait: bool
    rows: tuple[ReportRow, ...] = ()
    last_applied: int = 0
    gaps: tuple[tuple[int, int], ...] = ()
    replayed: int = 0
    too_far: bool = False


def plan_apply(
    batch: ReportBatch, last_applied: int, *, force: bool = False, max_seq: int | None = None
) -> ApplyPlan:
    """The ingest rule, pure: exactly once and in order per device.

    ``force`` applies a batch that would wait (after the consumer's redelivery limit, e.g. a
    hub whose state was reset), reporting the skipped range as a gap. ``max_seq`` is the
    highest sequence the device can have used: a batch reaching beyond it is never adopted
    (its position would make every later real row look like a replay).
    """
    if batch.prev_seq > last_applied and not force:
        return ApplyPlan(wait=True, last_applied=last_applied)
    if max_seq is not None and batch.last_seq > max(max_seq, last_applied):
        return ApplyPlan(wait=False, last_applied=last_applied, too_far=True)
    fresh = tuple(r for r in batch.rows if r.seq > last_applied)
    gaps: list[tuple[int, int]] = []
    expect = last_applied + 1
    for r in fresh:
        if r.seq > expect:
            gaps.append((expect, r.seq - 1))
        expect = r.seq + 1
    return ApplyPlan(
        wait=False,
        rows=fresh,
        last_applied=max(last_applied, batch.last_seq),
        gaps=tuple(gaps),
        replayed=len(batch.rows) - len(fresh),
    )
