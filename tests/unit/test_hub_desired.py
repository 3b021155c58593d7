"""Desired-state resolution: device > group > tag, newest wins within a level."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hub.desired import Assignment, Membership, resolve, resolve_all


def a(
    id_: int, kind: str, target: str, version: str = "1.0.0", ts: str | None = None
) -> Assignment:
    return Assignment(id_, kind, target, "app", version, ts or f"2026-01-01T00:00:{id_:02d}.000Z")


DEV = Membership("d1", groups=frozenset({"lab", "east"}), tags=frozenset({"rpi", "prod"}))


def test_nothing_assigned_resolves_to_none() -> None:
    assert resolve(DEV, []) is None
    assert (
        resolve(DEV, [a(1, "device", "other"), a(2, "group", "west"), a(3, "tag", "x86")]) is None
    )


def test_device_beats_group_beats_tag_whatever_the_age() -> None:
    tag, group, device = (
        a(9, "tag", "rpi", "3.0.0"),
        a(5, "group", "lab", "2.0.0"),
        a(1, "device", "d1"),
    )
    assert resolve(DEV, [tag, group, device]) == device
    assert resolve(DEV, [tag, group]) == group
    assert resolve(DEV, [tag]) == tag


def test_newest_wins_within_a_level() -> None:
    older, newer = a(1, "group", "lab", "1.0.0"), a(2, "group", "east", "2.0.0")
    assert resolve(DEV, [older, newer]) == newer
    assert resolve(DEV, [newer, older]) == newer


def test_equal_timestamps_fall_back_to_the_greater_id() -> None:
    ts = "2026-01-01T00:00:00.000Z"
    first, second = a(1, "tag", "rpi", "1.0.0", ts), a(2, "tag", "prod", "2.0.0", ts)
    assert resolve(DEV, [second, first]) == second


def test_decommissioned_device_runs_nothing() -> None:
    gone = Membership("d1", decommissioned=True)
    assert resolve(gone, [a(1, "device", "d1")]) is None


def test_unknown_target_kind_is_ignored() -> None:
    assert resolve(DEV, [a(1, "planet", "earth")]) is None


names = st.sampled_from(["lab", "east", "west", "rpi", "prod", "x86"])
devices_ids = st.sampled_from(["d1", "d2", "d3"])
memberships = st.builds(
    Membership,
    devices_ids,
    st.frozensets(names, max_size=3),
    st.frozensets(names, max_size=3),
    st.booleans(),
)
assignment_lists = st.lists(
    st.tuples(st.sampled_from(["device", "group", "tag"]), names | devices_ids, st.integers(0, 5)),
    max_size=12,
).map(
    lambda items: [
        Assignment(i + 1, kind, target, "app", f"{i}.0.0", f"2026-01-01T00:00:0{ts}.000Z")
        for i, (kind, target, ts) in enumerate(items)
    ]
)


@given(st.lists(memberships, max_size=6, unique_by=lambda m: m.device_id), assignment_lists)
def test_resolve_all_agrees_with_resolve(
    devices: list[Membership], assignments: list[Assignment]
) -> None:
    got = resolve_all(devices, assignments)
    assert got == {m.device_id: resolve(m, assignments) for m in devices}


@given(memberships, assignment_lists, st.randoms())
def test_order_of_assignments_does_not_matter(
    m: Membership, assignments: list[Assignment], rnd
) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(assignments)
    rnd.shuffle(shuffled)
    assert resolve(m, shuffled) == resolve(m, assignments)


@given(memberships, assignment_lists)
def test_winner_applies_and_nothing_more_specific_or_newer_applies(
    m: Membership, assignments: list[Assignment]
) -> None:
    win = resolve(m, assignments)
    applying = [
        x
        for x in assignments
        if (x.target_kind == "device" and x.target == m.device_id)
        or (x.target_kind == "group" and x.target in m.groups)
        or (x.target_kind == "tag" and x.target in m.tags)
    ]
    if m.decommissioned or not applying:
        assert win is None
        return
    assert win in applying
    rank = {"tag": 0, "group": 1, "device": 2}
    for x in applying:
        assert (rank[x.target_kind], x.created_at, x.id) <= (
            rank[win.target_kind],
            win.created_at,
            win.id,
        )
