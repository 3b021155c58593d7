"""Which data budget reaches each device: one pure function.

The rule (docs/sync.md "Metered links"): a budget set for the device itself wins; else the
smallest budget of the groups it is in (the most frugal link of its groups is the safe
guess); else none is sent and the agent's own ``[metered] budget`` applies, if any.
"""

from __future__ import annotations

from collections.abc import Mapping

from hub.desired import Membership


def budget_for(
    device: Membership,
    device_budgets: Mapping[str, int],
    group_budgets: Mapping[str, int],
) -> int | None:
    own = device_budgets.get(device.device_id)
    if own is not None:
        return own
    found = [group_budgets[g] for g in device.groups if g in group_budgets]
    return min(found) if found else None


def usage(heartbeat: Mapping[str, object] | None) -> dict[str, object] | None:
    """Bytes used against the budget from a device's latest full heartbeat (its ``budget``
    and ``bytes_day``, the leaf link's traffic in the last 24 h); None when it says neither."""
    if not heartbeat:
        return None
    budget, used = heartbeat.get("budget"), heartbeat.get("bytes_day")
    if budget is None and used is None:
        return None
    over = isinstance(budget, int) and isinstance(used, int) and used > budget
    return {"budget": budget, "bytes_day": used, "over": over}
