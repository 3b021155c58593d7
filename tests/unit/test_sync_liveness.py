"""What "online" means (agent.sync.liveness, pure): table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from agent.sync.liveness import (
    ack_timeout_for,
    describe,
    is_stale,
    stale_after,
    unreachable_since,
)

T = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


@pytest.mark.parametrize(
    ("interval", "wanted", "timeout"),
    [(30.0, 10.0, 10.0), (4.0, 10.0, 2.0), (0.5, 10.0, 0.25), (60.0, 5.0, 5.0)],
)
def test_the_reply_timeout_is_at_most_half_an_interval(
    interval: float, wanted: float, timeout: float
) -> None:
    assert ack_timeout_for(interval, wanted) == timeout


def test_defaults_judge_within_two_intervals() -> None:
    interval = 30.0
    stale = stale_after(interval, ack_timeout_for(interval, 10.0), 2.0)
    assert stale == 42.0 and stale < 2 * interval


@pytest.mark.parametrize(
    ("now", "last", "stale", "expected"),
    [
        (T, None, 42.0, True),  # never answered
        (T, T - 10, 42.0, False),
        (T, T - 42, 42.0, False),  # exactly at the bound: not yet
        (T, T - 42.5, 42.0, True),
        (T, T + 5, 42.0, False),  # clock stepped back: an answer "from the future" is fresh
    ],
)
def test_is_stale(now: float, last: float | None, stale: float, expected: bool) -> None:
    assert is_stale(now, last, stale) is expected


@pytest.mark.parametrize(
    ("online", "last", "started", "since"),
    [
        (True, T, T - 100, None),  # online: not unreachable
        (None, None, None, None),  # no hub configured
        (False, T - 5, T - 100, T - 5),  # since the last answer
        (False, None, T - 100, T - 100),  # never answered: since sync started
    ],
)
def test_unreachable_since(
    online: bool | None, last: float | None, started: float | None, since: float | None
) -> None:
    assert unreachable_since(online, last, started) == since


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (None, "sync has not run (not enrolled, or no [hub] url)"),
        (
            {"mode": "leaf", "online": True, "last_contact": T - 3},
            "online (leaf), last answer from the hub 3 s ago",
        ),
        (
            {
                "mode": "leaf",
                "online": False,
                "last_contact": T - 40,
                "unreachable_since": T - 40,
                "last_error": "the hub did not answer a heartbeat (no reply within 10s)",
            },
            "unreachable since 2027-01-15 07:59:20 UTC (leaf):"
            " the hub did not answer a heartbeat (no reply within 10s)",
        ),
        (  # a status file from before unreachable_since existed
            {"mode": "direct", "online": False, "last_contact": T - 40, "last_error": None},
            "unreachable since 2027-01-15 07:59:20 UTC (direct)",
        ),
        ({"mode": "leaf", "online": False}, "unreachable, no answer yet (leaf)"),
    ],
)
def test_describe(status: dict[str, Any] | None, line: str) -> None:
    assert describe(status, T) == line
