"""agent.sync.downlink.Announced: a read older than the revision its prompt announced (a
hub cluster's replica behind) is read again, backing off, a bounded number of times."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.sync.downlink import STALE_RETRIES, STALE_RETRY, STALE_RETRY_MAX, Announced


def test_a_read_behind_its_prompt_is_read_again_backing_off_then_given_up() -> None:
    a = Announced()
    a.announce(7)
    delays = []
    while (d := a.read_again(6)) is not None:
        delays.append(d)
    assert len(delays) == STALE_RETRIES
    assert delays[:3] == [STALE_RETRY, 2 * STALE_RETRY, 4 * STALE_RETRY]
    assert max(delays) == STALE_RETRY_MAX and delays == sorted(delays)
    assert sum(delays) > 60  # long enough for a node restarted after a crash to catch up


def test_not_behind_means_no_read_again() -> None:
    a = Announced()
    assert a.read_again(None) is None  # nothing announced
    a.announce(5)
    assert a.read_again(5) is None and a.read_again(9) is None
    assert a.read_again(None) == STALE_RETRY and a.read_again(0) is not None  # none held yet


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 20)), max_size=200))
def test_retries_per_announced_revision_are_bounded(steps: list[tuple[bool, int]]) -> None:
    """Whatever the order of prompts and reads: at most STALE_RETRIES re-reads between two
    announcements of a newer revision, each delay within bounds."""
    a = Announced()
    since_newer = 0
    for is_prompt, revision in steps:
        if is_prompt:
            if revision > a.revision:
                since_newer = 0
            a.announce(revision)
        else:
            d = a.read_again(revision)
            if d is not None:
                since_newer += 1
                assert STALE_RETRY <= d <= STALE_RETRY_MAX and revision < a.revision
        assert since_newer <= STALE_RETRIES
